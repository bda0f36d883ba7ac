"""The shared pool: worker processes for CPU work, threads for blocking IO.

* :mod:`bridge.pool.shared`: :class:`SharedPool`, the public API and lifecycle;
* :mod:`bridge.pool.backend`: the small interface a backend implements;
* :mod:`bridge.pool.local`: this host's worker processes, dispatched on the event loop;
* :mod:`bridge.pool.dask`: a Dask cluster (optional: ``pip install cutover[dask]``);
* :mod:`bridge.pool.protocol`: the call protocol both share (encoding, settling, counting);
* :mod:`bridge.pool.worker` and :mod:`bridge.pool.wire`: the worker side and its pipe's frames;
* :mod:`bridge.pool.memory`: the per-worker memory ceiling.
"""

from __future__ import annotations

from .backend import BACKEND_ENV, parse_backend
from .protocol import PoolStats
from .shared import CallFuture, SharedPool, get_pool, set_pool
from .worker import worker_threads

__all__ = ["SharedPool", "CallFuture", "PoolStats", "get_pool", "set_pool", "parse_backend", "BACKEND_ENV", "worker_threads"]
