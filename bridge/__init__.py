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
* hosting both stacks: ``cutover serve`` (``bridge.cutover.host``), apps named in the plan's
  ``[apps]`` (``bridge.cutover.apps`` says what each may be)
* durable jobs: :class:`JobStore`, :class:`JobRunner`, :class:`KindPolicy`, :class:`JobRecord`
* errors: :mod:`bridge.errors`

Importing :mod:`bridge` never installs a reactor.
"""

from .cpu import CpuBudget, CpuBudgetError, cpu_budget
from .deferreds import as_deferred, as_future, async_api, deferred_api, maybe_awaitable
from .errors import (
    MainModuleGuardError,
    PoolBusy,
    PoolClosed,
    PoolError,
    PoolUnavailable,
    ReactorInstallError,
    RemoteTraceback,
    SerializationError,
    WorkerCrashed,
    WorkerStartupError,
)
from .jobs import JobFinished, JobNotFound, JobRecord, JobRunner, JobStore, KindPolicy
from .pool import PoolStats, SharedPool, get_pool, set_pool, worker_threads
from .reactor import install_reactor, run_reactor_in_thread, stop_reactor
from .tasks import LeaseBusy, TaskLease, TaskManager, TaskRegistry, TaskSpec

__version__ = "0.1.0"

__all__ = [
    "CpuBudget",
    "JobFinished",
    "JobNotFound",
    "JobRecord",
    "JobRunner",
    "JobStore",
    "KindPolicy",
    "LeaseBusy",
    "TaskLease",
    "TaskManager",
    "TaskRegistry",
    "TaskSpec",
    "CpuBudgetError",
    "MainModuleGuardError",
    "PoolBusy",
    "PoolClosed",
    "PoolError",
    "PoolStats",
    "PoolUnavailable",
    "ReactorInstallError",
    "RemoteTraceback",
    "SerializationError",
    "SharedPool",
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
