"""The FastAPI rewrite of the legacy service: the migration's target.

The same HTTP contract as ``legacy/`` (the parity suite holds them equal),
written the asyncio way: a lifespan that attaches the shared pool, ``await
pool.run(...)`` for CPU work, background work as ``@task``, and jobs that
survive a restart (SQLite, ``bridge.jobs``).
"""

from .app import create_app, serve
from .routes import __version__
from .settings import ModernSettings

__all__ = ["ModernSettings", "__version__", "create_app", "serve"]
