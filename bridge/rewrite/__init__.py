"""Source rewrites for ``cutover rewrite``: move Twisted code towards asyncio, keeping formatting and comments."""

from .transform import Report, RewriteResult, Target, async_functions, rewrite_source

__all__ = ["Report", "RewriteResult", "Target", "async_functions", "rewrite_source"]
