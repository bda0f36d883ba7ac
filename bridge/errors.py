"""The errors cutover raises, in one place so callers can catch them by family.

Every pool failure is a :class:`PoolError`, except a call that overruns its
timeout, which raises the builtin :class:`TimeoutError` like ``asyncio.timeout``
does, and a cancelled call, which raises the caller's own ``CancelledError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


class PoolError(Exception):
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


class RemoteTraceback(Exception):
    """The formatted traceback of an exception raised in a worker, attached as ``__cause__``."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class RemoteError(Exception):
    """Stands in for a worker exception that could not be pickled back to the caller."""


class ReactorInstallError(RuntimeError):
    """Twisted already has a reactor that cutover cannot run on the asyncio loop."""


class StoreError(Exception):
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
