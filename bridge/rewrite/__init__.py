"""Source rewrites for ``cutover rewrite``: move Twisted code towards asyncio, keeping formatting and comments."""

from .base import Report
from .transform import RewriteResult, Target, async_functions, rewrite_source

__all__ = ["Report", "RewriteResult", "Target", "async_functions", "rewrite_source"]
