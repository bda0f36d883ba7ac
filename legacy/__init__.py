"""The legacy Twisted service that cutover's users migrate away from.

A twisted.web resource tree with ``@inlineCallbacks`` handlers,
``deferToThread`` for blocking IO, a ``LoopingCall`` for the periodic
``data_sync`` task, and jobs kept in memory. Its CPU work goes to the shared
pool through ``pool.defer(...)``.
"""

from .service import LegacyService, __version__, serve
from .settings import LegacySettings

__all__ = ["LegacyService", "LegacySettings", "__version__", "serve"]
