"""The errors cutover raises, in one place, under one root, so callers can catch them by family.

The tree (builtin bases in brackets, for the callers that catch those)::

    CutoverError
    ├── CpuBudgetError [ValueError]        CUTOVER_CPUS is not a positive integer
    ├── PlanError [ValueError]             a plan that cannot be used, with its file and line
    ├── GateRefused                        a forward move the evidence does not support
    │                                      (defined with its figures in bridge.host.control)
    ├── HostStartError                     the host could not start
    ├── AppLoadError                       an app named in [apps] cannot be loaded
    ├── ReactorInstallError [RuntimeError] a reactor cutover cannot run on the asyncio loop
    ├── IncompleteResponse                 twisted.web closed before its answer was complete
    ├── LeaseBusy [RuntimeError]           a task's lease is held elsewhere
    ├── PoolError                          the shared pool's own failures
    │   ├── PoolClosed
    │   ├── PoolBusy
    │   ├── PoolUnavailable
    │   ├── WorkerCrashed
    │   ├── WorkerStartupError
    │   ├── MainModuleGuardError
    │   └── SerializationError [TypeError]
    ├── RemoteError                        a worker's exception that could not be pickled back
    ├── RemoteTraceback                    (a worker's traceback, attached as ``__cause__``)
    ├── JobNotFound [LookupError]
    ├── JobFinished
    └── StoreError                         cutover's durable store (SQLite or PostgreSQL)
        ├── StoreUnavailable [ConnectionError]
        └── SchemaError

A call that overruns its timeout raises the builtin :class:`TimeoutError`, as
``asyncio.timeout`` does, and a cancelled call the caller's own
``CancelledError``. :func:`answer_for` gives the HTTP answer to each of the
toolkit's errors, so every stack of a service answers them alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from os import PathLike

    from .jobrecord import JobRecord

__all__ = [
    "AppLoadError",
    "CpuBudgetError",
    "CutoverError",
    "ErrorAnswer",
    "HostStartError",
    "IncompleteResponse",
    "JobFinished",
    "JobNotFound",
    "LeaseBusy",
    "MainModuleGuardError",
    "PlanError",
    "PoolBusy",
    "PoolClosed",
    "PoolError",
    "PoolUnavailable",
    "ReactorInstallError",
    "RemoteError",
    "RemoteTraceback",
    "SchemaError",
    "SerializationError",
    "StoreError",
    "StoreUnavailable",
    "WorkerCrashed",
    "WorkerStartupError",
    "answer_for",
]


class CutoverError(Exception):
    """The root of every error cutover defines."""


class CpuBudgetError(CutoverError, ValueError):
    """``CUTOVER_CPUS`` is set but is not a positive integer."""


class PlanError(CutoverError, ValueError):
    """A plan is invalid. ``str()`` reads ``cutover.toml:7: unknown mode "canery" (...)``.

    ``line`` is 1-based, or None when the error has no place in a file (a change
    made through :meth:`Plan.with_mode`); ``reason`` is the message without the place.
    """

    def __init__(self, reason: str, *, line: int | None = None, source: str | PathLike[str] | None = None) -> None:
        self.reason = reason
        self.line = line
        self.source = Path(source) if source is not None else None
        super().__init__(where_in(self.source, line) + reason)

    def at(self, line: int | None, source: Path | None) -> PlanError:
        """The same error, placed in a file."""
        return PlanError(self.reason, line=line, source=source)


def where_in(source: Path | None, line: int | None) -> str:
    """``cutover.toml:7: ``, the prefix that places a message in a file (empty with no place)."""
    if source is not None and line is not None:
        return f"{source}:{line}: "
    if source is not None:
        return f"{source}: "
    if line is not None:
        return f"line {line}: "
    return ""


class HostStartError(CutoverError):
    """The host could not start; ``str()`` is one line, with the plan's file and line where there is one."""


class AppLoadError(CutoverError):
    """An app named in ``[apps]`` cannot be loaded or is not something the host can serve.

    ``str()`` is one line: what was named, and what is wrong with it.
    """


class IncompleteResponse(CutoverError):
    """Twisted closed the connection before its response was complete (or sent bytes that are not HTTP)."""


class LeaseBusy(CutoverError, RuntimeError):
    """Someone else holds the lease: another process, or another TaskLease in this one."""

    def __init__(self, path: Path, holder: int | None) -> None:
        who = f"pid {holder}" if holder is not None else "another holder"
        super().__init__(f"the lease {path} is held by {who}")
        self.path = path
        self.holder = holder


class JobNotFound(CutoverError, LookupError):
    """No job has this id."""


class JobFinished(CutoverError):
    """The job already reached a final status, so it cannot be cancelled; ``record`` is how it ended."""

    def __init__(self, record: JobRecord) -> None:
        super().__init__(f"job {record.id} already {record.status}")
        self.record = record


class PoolError(CutoverError):
    """Base class of the shared pool's own errors."""


class PoolClosed(PoolError):
    """The pool is not running: it was never started, or it is closing or closed."""


class PoolBusy(PoolError):
    """The pool's queue is full and the caller asked not to wait (``block=False``), or even
    the backlog of callers waiting for room is full (``max_waiting``): retry later."""


class WorkerCrashed(PoolError):
    """The worker process running this call died (SIGKILL, segfault, out of memory).

    Only the call that was on the dead worker fails; the pool replaces the worker.
    """

    def __init__(self, message: str, *, pid: int | None = None, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode


class PoolUnavailable(PoolError):
    """The pool's cluster cannot be reached: the Dask scheduler is down or the connection was lost.

    Calls in flight when the connection went fail with it, and new calls raise
    it at once until the client reconnects; ``stats().health`` says why.
    """


class WorkerStartupError(PoolError):
    """A worker could not start: its initializer raised, or it died before it was ready.

    Raised once, with the worker's traceback, instead of a storm of broken calls.
    """


class MainModuleGuardError(PoolError):
    """The main module would be re-run by every worker because it lacks ``if __name__ == "__main__":``."""


class SerializationError(PoolError, TypeError):
    """A function, an argument or a result could not be pickled across the process boundary."""


class RemoteTraceback(CutoverError):
    """The formatted traceback of an exception raised in a worker, attached as ``__cause__``."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class RemoteError(CutoverError):
    """Stands in for a worker exception that could not be pickled back to the caller."""


class ReactorInstallError(CutoverError, RuntimeError):
    """Twisted already has a reactor that cutover cannot run on the asyncio loop."""


class StoreError(CutoverError):
    """Base class of the errors of cutover's durable store (jobs on SQLite or PostgreSQL)."""


class StoreUnavailable(StoreError, ConnectionError):
    """The database cannot be reached now (down, restarting, the network gone): retry later.

    Nothing was written. Endpoints answer it with 503 ``store_unavailable`` and
    a ``Retry-After``; the store reconnects by itself when the database returns.
    """


class SchemaError(StoreError):
    """The database's schema cannot be used by this version of cutover (for example, it is newer)."""


@dataclass(frozen=True)
class ErrorAnswer:
    """How an HTTP endpoint answers one error: the status, the code and message of the JSON body, any headers.

    Both stacks of a service answer the toolkit's errors alike by asking :func:`answer_for`,
    each in its own handlers (that is what parity compares), so the table is written once.
    """

    status: int
    code: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, dict[str, str]]:
        """The contract's error body, ``{"error": {"code", "message"}}``."""
        return {"error": {"code": self.code, "message": self.message}}


def answer_for(exc: BaseException) -> ErrorAnswer | None:
    """The toolkit's answer to one of its own errors (and the builtins its pool raises); None for any other.

    * a call over its timeout (:class:`TimeoutError`): 504 ``timeout``
    * :class:`PoolBusy`: 503 ``busy``, ``Retry-After: 1``
    * :class:`PoolUnavailable` (the Dask scheduler is gone): 503 ``pool_unavailable``, ``Retry-After: 5``
    * :class:`StoreUnavailable`: 503 ``store_unavailable``, ``Retry-After: 5``
    * :class:`WorkerCrashed`: 500 ``worker_crashed``
    * :class:`MemoryError` (a worker at its memory ceiling): 500 ``out_of_memory``
    """
    if isinstance(exc, TimeoutError):
        return ErrorAnswer(504, "timeout", str(exc))
    if isinstance(exc, PoolBusy):
        return ErrorAnswer(503, "busy", str(exc), {"Retry-After": "1"})
    if isinstance(exc, PoolUnavailable):
        return ErrorAnswer(503, "pool_unavailable", str(exc), {"Retry-After": "5"})
    if isinstance(exc, StoreUnavailable):  # its message names the database: not for clients
        return ErrorAnswer(503, "store_unavailable", "the job store is unreachable; retry later", {"Retry-After": "5"})
    if isinstance(exc, WorkerCrashed):
        return ErrorAnswer(500, "worker_crashed", str(exc))
    if isinstance(exc, MemoryError):
        return ErrorAnswer(500, "out_of_memory",
                           "the worker ran out of memory on this request" + (f": {exc}" if str(exc) else ""))
    return None
