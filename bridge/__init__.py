"""cutover's bridge: the reusable toolkit for hosting Twisted and asyncio in one process.

Public surface:

* CPU budget: :func:`cpu_budget`, :class:`CpuBudget`
* the shared pool: :class:`SharedPool`, :func:`get_pool`, :func:`set_pool`, :func:`worker_threads`
* the two worlds: :func:`install_reactor`, :func:`stop_reactor`, :func:`run_reactor_in_thread`,
  :func:`as_future`, :func:`as_deferred`, :func:`deferred_api`, :func:`async_api`,
  :func:`maybe_awaitable`
* background work: :class:`TaskRegistry`, :class:`TaskManager`, :class:`TaskLease`
  (``from bridge.tasks import task`` for the default registry); Twisted's side:
  ``bridge.looping.LoopingTasks``; who runs what: the host's ``bridge.ownership.get_task_board()``
* hosting both stacks: ``cutover serve`` (``bridge.host.runtime``), apps named in the plan's
  ``[apps]`` (``bridge.host.apps`` says what each may be)
* durable jobs: :class:`JobStore`, :class:`JobRunner`, :class:`KindPolicy`, :class:`JobRecord`
* errors: :mod:`bridge.errors` (root :class:`CutoverError`; the common ones re-exported here)

Importing :mod:`bridge` never installs a reactor, and imports nothing but this
file: each name is loaded from its module on first use (PEP 562), so a pool
worker that only needs :mod:`bridge.pool.worker` never imports Twisted or
aiosqlite. Each name has one home, given in ``_HOMES``; the errors' is
:mod:`bridge.errors`, with the whole tree drawn in its docstring.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cpu import CpuBudget, cpu_budget
    from .deferreds import as_deferred, as_future, async_api, deferred_api, maybe_awaitable
    from .errors import (
        CpuBudgetError,
        CutoverError,
        JobFinished,
        JobNotFound,
        LeaseBusy,
        MainModuleGuardError,
        PoolBusy,
        PoolClosed,
        PoolError,
        PoolUnavailable,
        ReactorInstallError,
        RemoteError,
        RemoteTraceback,
        SerializationError,
        StoreUnavailable,
        WorkerCrashed,
        WorkerStartupError,
    )
    from .jobs import JobRecord, JobRunner, JobStore, KindPolicy
    from .pool import PoolStats, SharedPool, get_pool, set_pool, worker_threads
    from .reactor import install_reactor, run_reactor_in_thread, stop_reactor
    from .tasks import TaskLease, TaskManager, TaskRegistry, TaskSpec

__version__ = "0.1.0"

__all__ = [
    "CpuBudget",
    "CpuBudgetError",
    "CutoverError",
    "JobFinished",
    "JobNotFound",
    "JobRecord",
    "JobRunner",
    "JobStore",
    "KindPolicy",
    "LeaseBusy",
    "MainModuleGuardError",
    "PoolBusy",
    "PoolClosed",
    "PoolError",
    "PoolStats",
    "PoolUnavailable",
    "ReactorInstallError",
    "RemoteError",
    "RemoteTraceback",
    "SerializationError",
    "SharedPool",
    "StoreUnavailable",
    "TaskLease",
    "TaskManager",
    "TaskRegistry",
    "TaskSpec",
    "WorkerCrashed",
    "WorkerStartupError",
    "as_deferred",
    "as_future",
    "async_api",
    "cpu_budget",
    "deferred_api",
    "get_pool",
    "install_reactor",
    "maybe_awaitable",
    "run_reactor_in_thread",
    "set_pool",
    "stop_reactor",
    "worker_threads",
]

#: Where each public name lives: ``bridge.X`` is ``bridge.<module>.X``.
_HOMES = {
    "CpuBudget": "cpu",
    "CpuBudgetError": "errors",
    "CutoverError": "errors",
    "JobFinished": "errors",
    "JobNotFound": "errors",
    "JobRecord": "jobs",
    "JobRunner": "jobs",
    "JobStore": "jobs",
    "KindPolicy": "jobs",
    "LeaseBusy": "errors",
    "MainModuleGuardError": "errors",
    "PoolBusy": "errors",
    "PoolClosed": "errors",
    "PoolError": "errors",
    "PoolStats": "pool",
    "PoolUnavailable": "errors",
    "ReactorInstallError": "errors",
    "RemoteError": "errors",
    "RemoteTraceback": "errors",
    "SerializationError": "errors",
    "SharedPool": "pool",
    "StoreUnavailable": "errors",
    "TaskLease": "tasks",
    "TaskManager": "tasks",
    "TaskRegistry": "tasks",
    "TaskSpec": "tasks",
    "WorkerCrashed": "errors",
    "WorkerStartupError": "errors",
    "as_deferred": "deferreds",
    "as_future": "deferreds",
    "async_api": "deferreds",
    "cpu_budget": "cpu",
    "deferred_api": "deferreds",
    "get_pool": "pool",
    "install_reactor": "reactor",
    "maybe_awaitable": "deferreds",
    "run_reactor_in_thread": "reactor",
    "set_pool": "pool",
    "stop_reactor": "reactor",
    "worker_threads": "pool",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f".{name}", __name__)  # ``bridge.errors`` after a bare ``import bridge``
        raise AttributeError(f"module 'bridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
