"""One shared pool per process: worker processes for CPU work, threads for blocking IO.

Why not the standard library's ``ProcessPoolExecutor``, loky or pebble?

* ``ProcessPoolExecutor`` (and loky, built on the same design) treats one dead
  worker as a broken pool: every pending call fails with ``BrokenProcessPool``
  (or ``TerminatedWorkerError``), and a running call cannot be stopped, so a
  timeout cannot free its worker.
* pebble kills a worker on timeout and fails only its call, the semantics we
  want, but all its workers share one channel guarded by a lock: a worker killed
  while holding it wedges the pool with no error (pebble #163, #97, #119).

So the pool is built on :mod:`multiprocessing` processes with one private pipe
per worker and a single dispatcher thread that waits on every pipe and every
process sentinel at once. A worker's death is then an event about that worker
only: its call fails with :class:`~bridge.errors.WorkerCrashed`, a replacement
starts, nothing else notices. Timeouts and cancellation of running calls kill
the worker, the only way to stop native code (OpenCV, onnxruntime) mid-call.

Every call has one state, changed under the pool lock::

    waiting --(queue has room)--> queued --(idle worker)--> running --> done
       \\______________________________\\________________________/
                 cancel(): removed, or its worker killed  -> cancelled

Results reach the caller's world through the call's ``concurrent.futures.Future``:
``run`` wraps it for asyncio, ``defer`` for Twisted, both thread-safe.

The same pool can send its process work to a Dask cluster instead
(``backend="dask://host:port"`` or ``CUTOVER_POOL``): :mod:`bridge.dask_backend`
says what timeouts, cancellation and worker loss mean there. Threads stay local.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import functools
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from . import _worker
from .cpu import cpu_budget
from .errors import (
    PoolBusy,
    PoolClosed,
    PoolUnavailable,
    RemoteTraceback,
    SerializationError,
    WorkerCrashed,
    WorkerStartupError,
)
from .mainguard import check_main_guard

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from .dask_backend import DaskBackend

__all__ = ["SharedPool", "PoolStats", "get_pool", "set_pool"]

T = TypeVar("T")
log = logging.getLogger("cutover.pool")
StartMethod = Literal["forkserver", "spawn"]

#: Where process work runs when no ``backend`` is given: ``local`` or ``dask://host:port``.
BACKEND_ENV = "CUTOVER_POOL"
_STARTING, _IDLE, _BUSY, _DEAD = "starting", "idle", "busy", "dead"
_MAX_STARTUP_DEATHS = 3
_DURATION_SAMPLES = 2048


def parse_backend(url: str) -> str | None:
    """The Dask scheduler address a backend setting names, or None for the local pool.

    ``local`` (or empty) is the local pool; ``dask://host:port`` a scheduler
    over TCP; ``dask+tls://host:port`` over TLS (configure ``distributed.comm``
    security). Anything else is a ValueError naming the accepted forms.
    """
    value = url.strip()
    if value in ("", "local"):
        return None
    for prefix, scheme in (("dask://", "tcp://"), ("dask+tcp://", "tcp://"), ("dask+tls://", "tls://")):
        if value.startswith(prefix) and len(value) > len(prefix):
            return scheme + value[len(prefix):]
    raise ValueError(f"unknown pool backend {url!r}: use 'local', 'dask://host:port' or 'dask+tls://host:port'")


def _on_loop(callback: Callable[[], None] | None) -> Callable[[], None] | None:
    """``callback``, to be called from the dispatcher thread but run on the caller's loop."""
    if callback is None:
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # a Twisted caller without a running asyncio loop: its reactor, if one is installed
        reactor = sys.modules.get("twisted.internet.reactor")
        if reactor is None:
            return callback
        return lambda: reactor.callFromThread(callback)

    def hand_over() -> None:
        try:
            loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the loop has closed: nobody is left to tell
            pass

    return hand_over


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


@dataclass(eq=False)
class _Call:
    id: int
    name: str
    payload: bytes
    timeout: float | None
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    state: str = "waiting"
    worker: _Worker | None = None
    started: float = 0.0
    deadline: float | None = None
    on_start: Callable[[], None] | None = None  # called (from the dispatcher) once a worker takes the call


@dataclass(eq=False)
class _Worker:
    index: int
    process: Any
    conn: Connection
    lifeline: Connection
    state: str = _STARTING
    pid: int | None = None
    call: _Call | None = None
    killed: bool = False


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of the pool, cheap enough to serve on every ``/status``."""

    workers: int
    alive: int
    busy: int
    queued: int
    waiting: int
    completed: int
    failed: int
    crashed: int
    timeouts: int
    cancelled: int
    restarts: int
    threads: int
    worker_threads: int
    start_method: str
    run_time_ms: dict[str, float]
    #: ``"local"``, or the Dask scheduler's URL (``"dask://127.0.0.1:8786"``).
    backend: str = "local"
    #: ``"ok"``, or a short reason: ``"scheduler unreachable"``, ``"no workers"``, ``"broken"``, ``"not running"``.
    health: str = "ok"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class SharedPool:
    """A process pool sized to the CPU budget, plus a bounded thread pool.

    ``processes`` defaults to the CPU budget minus one (at least one), leaving a
    CPU for the event loop; ``worker_threads`` (the cap on native threads inside
    each worker) defaults to ``budget // processes`` so workers x threads never
    exceed the budget. ``max_queued`` bounds calls accepted but not yet running;
    past it, ``run`` and ``defer`` wait for room, or raise :class:`PoolBusy`
    with ``block=False``. ``max_waiting`` bounds the calls waiting for room:
    past it even a blocking call gets :class:`PoolBusy` at once, so a burst can
    never grow an unbounded backlog (each waiting call holds its arguments, an
    image or a recording, in memory). Its default, ``max(1024, 4 * max_queued)``,
    lets a batch fan out; a service sizes it to what its requests may hold.

    ``initializer(*initargs)`` runs once in every worker before its first call,
    the place to load a model. It must be picklable (a module-level function).

    ``backend`` picks where process work runs: ``"local"`` (these workers) or
    ``"dask://host:port"`` (a Dask scheduler; ``max_queued`` then bounds this
    process's calls in flight on the cluster, ``startup_timeout`` the connection
    attempt, and ``processes`` becomes the cluster's worker count at start).
    None reads ``CUTOVER_POOL`` from the environment, else local.
    """

    def __init__(
        self,
        processes: int | None = None,
        threads: int | None = None,
        *,
        cpus: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        start_method: StartMethod | None = None,
        max_queued: int | None = None,
        max_waiting: int | None = None,
        worker_threads: int | None = None,
        preload: tuple[str, ...] = (),
        startup_timeout: float = 60.0,
        backend: str | None = None,
    ) -> None:
        chosen = backend if backend is not None else os.environ.get(BACKEND_ENV, "")
        self._dask_address = parse_backend(chosen)
        self.backend = "local" if self._dask_address is None else chosen.strip()
        self._dask: DaskBackend | None = None
        self._explicit_worker_threads = worker_threads
        budget = cpus if cpus is not None else cpu_budget().cpus
        if budget < 1:
            raise ValueError(f"cpus must be at least 1, got {budget}")
        self.cpus = budget
        self.processes = processes if processes is not None else max(1, budget - 1)
        if self.processes < 1:
            raise ValueError(f"processes must be at least 1, got {self.processes}")
        self.threads = threads if threads is not None else max(4, 4 * budget)
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        self.worker_threads = worker_threads or max(1, budget // self.processes)
        self.max_queued = max_queued if max_queued is not None else 16 * self.processes
        if self.max_queued < 1:
            raise ValueError(f"max_queued must be at least 1, got {self.max_queued}")
        self.max_waiting = max_waiting if max_waiting is not None else max(1024, 4 * self.max_queued)
        if self.max_waiting < 0:
            raise ValueError(f"max_waiting must be at least 0, got {self.max_waiting}")
        method = start_method or ("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
        if method not in ("forkserver", "spawn"):
            raise ValueError(
                f"start method {method!r} is not allowed: fork from a process that runs threads "
                "or a reactor can deadlock the child (cpython #84559); use 'forkserver' or 'spawn'"
            )
        self.start_method: StartMethod = method
        self._preload = ("bridge._worker", *preload)
        self._startup_timeout = startup_timeout
        try:
            self._init_blob = pickle.dumps((initializer, tuple(initargs)))
        except Exception as exc:
            raise SerializationError(f"the pool initializer cannot be pickled: {exc}") from exc

        self._lock = threading.RLock()
        self._state = "new"  # new -> running -> closing -> closed
        self._ids = itertools.count(1)
        self._workers: list[_Worker] = []
        self._queue: deque[_Call] = deque()
        self._waiting: deque[_Call] = deque()
        self._running: set[_Call] = set()
        self._durations: deque[float] = deque(maxlen=_DURATION_SAMPLES)
        self._counts = dict.fromkeys(
            ("completed", "failed", "crashed", "timeouts", "cancelled", "restarts"), 0
        )
        self._startup_deaths = 0
        self._broken: WorkerStartupError | None = None
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._close_deadline = 0.0
        self._wake_r = self._wake_w = -1
        self._dispatcher: threading.Thread | None = None
        self._thread_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._ctx = multiprocessing.get_context(self.start_method)

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._state == "running"

    async def start(self) -> None:
        """Start the workers and wait until each has run its initializer.

        Raises :class:`MainModuleGuardError` before any worker starts if the main
        script lacks its guard, and :class:`WorkerStartupError` (with the
        worker's traceback) if the initializer fails.
        """
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.start_sync)

    def start_sync(self) -> None:
        """Blocking form of :meth:`start`, for scripts and threads without a loop."""
        if self._dask_address is not None:
            self._start_dask()
            return
        with self._lock:
            if self._state != "new":
                raise PoolClosed(f"a pool can start once; this one is {self._state}")
            check_main_guard(self.start_method)
            if self.start_method == "forkserver":
                self._ctx.set_forkserver_preload(list(self._preload))
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._state = "running"
            self._thread_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.threads, thread_name_prefix="cutover-io"
            )
            _live_pools.add(self)
            self._dispatcher = threading.Thread(target=self._dispatch_loop, name="cutover-pool", daemon=True)
            try:
                for index in range(self.processes):
                    self._workers.append(self._spawn(index))
            except BaseException as exc:
                self._settle_ready(WorkerStartupError(f"could not start a worker process: {exc}"))
            self._dispatcher.start()
        try:
            self._ready.result(timeout=self._startup_timeout)
        except BaseException as exc:
            self.close_sync(timeout=0)
            if isinstance(exc, concurrent.futures.TimeoutError):
                raise WorkerStartupError(
                    f"pool workers were not ready within {self._startup_timeout}s"
                ) from None
            raise

    def _start_dask(self) -> None:
        """Connect to the Dask scheduler and register the initializer; threads stay local."""
        with self._lock:
            if self._state != "new":
                raise PoolClosed(f"a pool can start once; this one is {self._state}")
            self._state = "starting"
        try:
            from .dask_backend import DaskBackend
        except ImportError as exc:
            self._state = "new"
            raise PoolUnavailable(
                f"{BACKEND_ENV}={self.backend} needs dask.distributed: pip install 'cutover[dask]' ({exc})"
            ) from exc
        backend = DaskBackend(
            self.backend, init_blob=self._init_blob, worker_threads=self._explicit_worker_threads,
            max_queued=self.max_queued, max_waiting=self.max_waiting, connect_timeout=self._startup_timeout,
        )
        try:
            backend.start()
        except BaseException:
            with self._lock:
                self._state = "closed"
            raise
        with self._lock:
            closed_meanwhile = self._state != "starting"
            if not closed_meanwhile:
                self._dask = backend
        if closed_meanwhile:  # close() ran while we connected: leave no client or supervisor behind
            backend.close(0.0)
            raise PoolClosed("the pool was closed while it connected to the Dask scheduler")
        with self._lock:
            # The worker processes that run calls are the cluster's now (as counted at connect time).
            self.processes = backend.stats()["workers"] or self.processes
            self._thread_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.threads, thread_name_prefix="cutover-io"
            )
            self._state = "running"
            _live_pools.add(self)

    async def close(self, timeout: float = 10.0) -> None:
        """Stop accepting calls, let queued and running ones finish for up to
        ``timeout`` seconds, then fail the rest with :class:`PoolClosed`, kill
        their workers and reap every child. Safe to call more than once.

        Calls running in the pool's threads cannot be interrupted: they are left
        to finish on their own, and thread calls not yet started are dropped."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.close_sync, timeout)

    def close_sync(self, timeout: float = 10.0) -> None:
        """Blocking form of :meth:`close`."""
        if self._dask is not None:
            self._close_dask(timeout)
            return
        if self._dask_address is not None:
            with self._lock:
                if self._dask is None:  # not connected yet: a start in progress sees this and gives up
                    self._state = "closed"
                    return
            self._close_dask(timeout)
            return
        with self._lock:
            if self._state == "new":
                self._state = "closed"
                return
            if self._state == "running":
                self._state = "closing"
                self._close_deadline = time.monotonic() + max(0.0, timeout)
                pending = list(self._waiting)
                self._waiting.clear()
                for call in pending:
                    call.state = "done"
                self._wake()
            else:
                pending = []
        self._settle_ready(PoolClosed("the pool closed while starting"))
        for call in pending:
            _settle(call, PoolClosed("the pool closed before this call could be queued"))
        if self._thread_pool is not None:
            self._thread_pool.shutdown(wait=False, cancel_futures=True)
        dispatcher = self._dispatcher
        # From the dispatcher thread itself (a done-callback calling close), the
        # dispatcher finishes the shutdown when the callback returns.
        if dispatcher is not None and dispatcher is not threading.current_thread():
            dispatcher.join()

    def _close_dask(self, timeout: float) -> None:
        with self._lock:
            if self._state != "running":
                return
            self._state = "closing"
        assert self._dask is not None
        if self._thread_pool is not None:
            self._thread_pool.shutdown(wait=False, cancel_futures=True)
        try:
            self._dask.close(timeout)
        finally:
            with self._lock:
                self._state = "closed"
            _live_pools.discard(self)

    def _settle_ready(self, error: BaseException | None) -> None:
        with self._lock:
            if self._ready.done():
                return
            if error is None:
                self._ready.set_result(None)
            else:
                self._ready.set_exception(error)

    async def __aenter__(self) -> SharedPool:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ calling

    async def run(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None,
                  block: bool = True, on_start: Callable[[], None] | None = None, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker process and return its result.

        ``timeout`` bounds the call's time in a worker; past it the worker is
        killed and replaced and the call raises :class:`TimeoutError`.
        Cancelling the awaiting task cancels the call: a queued call never runs,
        a running one has its worker killed. The function's own exception is
        raised as itself, with the worker's traceback as its ``__cause__``.
        ``on_start()`` is called once on this loop when a worker begins the
        call, before its result arrives; never for a call that never started
        (nor on a Dask backend, which does not report it).
        """
        return await asyncio.wrap_future(self._submit_future(fn, args, kwargs, timeout, block, _on_loop(on_start)))

    def defer(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None,
              block: bool = True, on_start: Callable[[], None] | None = None, **kwargs: Any) -> Deferred[T]:
        """Twisted form of :meth:`run`: a Deferred; ``Deferred.cancel()`` cancels the call.

        ``on_start`` is called on the caller's loop (the asyncio reactor's), as for :meth:`run`."""
        from .deferreds import deferred_from_future

        return deferred_from_future(self._submit_future(fn, args, kwargs, timeout, block, _on_loop(on_start)))

    def submit(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None,
               block: bool = True, on_start: Callable[[], None] | None = None,
               **kwargs: Any) -> concurrent.futures.Future[T]:
        """Thread-safe form for code that holds neither a loop nor a reactor.

        ``on_start`` is called on the pool's dispatcher thread: keep it short, hand work elsewhere."""
        return self._submit_future(fn, args, kwargs, timeout, block, on_start)

    async def run_in_thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run blocking IO in the pool's threads, with the caller's contextvars."""
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        return await loop.run_in_executor(self._threads(), functools.partial(ctx.run, fn, *args, **kwargs))

    def defer_to_thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Deferred[T]:
        """Twisted form of :meth:`run_in_thread`; cancelling drops a call not yet started."""
        from .deferreds import deferred_from_future

        ctx = contextvars.copy_context()
        return deferred_from_future(self._threads().submit(ctx.run, fn, *args, **kwargs))

    def _threads(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._state != "running" or self._thread_pool is None:
            raise PoolClosed(self._not_running_message())
        return self._thread_pool

    def _not_running_message(self) -> str:
        if self._state == "new":
            return "the pool is not started: use `async with pool:` or `await pool.start()`"
        return f"the pool is {self._state}"

    def _submit_future(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                       timeout: float | None, block: bool,
                       on_start: Callable[[], None] | None = None) -> concurrent.futures.Future[Any]:
        """One call to whichever backend runs process work; its future settles thread-safely."""
        if self._dask_address is None:
            return self._submit(fn, args, kwargs, timeout, block, on_start).future
        payload = _payload(fn, args, kwargs, timeout)
        with self._lock:
            if self._state != "running" or self._dask is None:
                raise PoolClosed(self._not_running_message())
            backend = self._dask
        return backend.submit(_name(fn), payload, timeout, block)

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                timeout: float | None, block: bool, on_start: Callable[[], None] | None = None) -> _Call:
        payload = _payload(fn, args, kwargs, timeout)
        call = _Call(next(self._ids), _name(fn), payload, timeout, on_start=on_start)
        with self._lock:
            if self._state != "running":
                raise PoolClosed(self._not_running_message())
            if self._broken is not None:
                raise self._broken
            if len(self._queue) < self.max_queued and not self._waiting:
                call.state = "queued"
                self._queue.append(call)
            elif block and len(self._waiting) < self.max_waiting:
                self._waiting.append(call)
            else:
                raise PoolBusy(
                    f"the pool queue is full ({self.max_queued} calls waiting for "
                    f"{self.processes} workers" + (f", {len(self._waiting)} more for room" if block else "")
                    + "); retry later"
                )
        call.future.add_done_callback(functools.partial(self._on_future_done, call))
        self._wake()
        return call

    def _on_future_done(self, call: _Call, future: concurrent.futures.Future[Any]) -> None:
        """A caller cancelled the future: drop the call, or kill the worker running it."""
        if not future.cancelled():
            return
        with self._lock:
            if call.state == "queued":
                self._queue.remove(call)
                self._admit_waiting()
            elif call.state == "waiting":
                self._waiting.remove(call)
            elif call.state == "running":
                call.state = "killing"  # the dispatcher kills its worker
                self._wake()
            else:
                return  # already settled, or already being killed
            if call.state != "killing":
                call.state = "done"
            self._counts["cancelled"] += 1

    def stats(self) -> PoolStats:
        """A snapshot for ``/status``; never waits on a worker or the network."""
        if self._dask_address is not None:
            return self._dask_stats()
        with self._lock:
            durations = sorted(self._durations)
            return PoolStats(
                workers=self.processes,
                alive=sum(w.state in (_IDLE, _BUSY) for w in self._workers),
                busy=len(self._running),
                queued=len(self._queue),
                waiting=len(self._waiting),
                threads=self.threads,
                worker_threads=self.worker_threads,
                start_method=self.start_method,
                run_time_ms={f"p{q}": _percentile(durations, q) * 1000 for q in (50, 90, 99)},
                backend=self.backend,
                health=self._local_health(),
                **self._counts,
            )

    def _local_health(self) -> str:
        if self._broken is not None:
            return "broken"
        return "ok" if self._state == "running" else "not running"

    def _dask_stats(self) -> PoolStats:
        backend = self._dask
        if backend is None or self._state != "running":
            zero = dict.fromkeys(("workers", "alive", "busy", "queued", "waiting", *self._counts), 0)
            return PoolStats(**zero, threads=self.threads, worker_threads=self.worker_threads, start_method="dask",
                             run_time_ms={f"p{q}": 0.0 for q in (50, 90, 99)}, backend=self.backend,
                             health="not running")
        view = backend.stats()
        durations = view.pop("durations")
        return PoolStats(
            threads=self.threads,
            worker_threads=self._explicit_worker_threads or 1,
            start_method="dask",
            run_time_ms={f"p{q}": _percentile(durations, q) * 1000 for q in (50, 90, 99)},
            backend=self.backend,
            **view,
        )

    # ------------------------------------------------------------------ dispatcher

    def _wake(self) -> None:
        with self._lock:
            if self._wake_w < 0:
                return
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass  # a wake-up is already pending

    def _spawn(self, index: int) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        life_r, life_w = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=_worker.worker_main,
            args=(child_conn, life_r, self._init_blob, self.worker_threads),
            name=f"cutover-worker-{index}",
            daemon=True,
        )
        process.start()
        child_conn.close()
        life_r.close()
        return _Worker(index, process, parent_conn, life_w)

    def _dispatch_loop(self) -> None:
        try:
            while True:
                for worker, call in self._plan():
                    self._send(worker, call)
                if self._finished_closing():
                    break
                with self._lock:
                    # Map each waitable to its worker at this instant: a handler may retire a
                    # worker and start another whose descriptors reuse the same numbers.
                    owners: dict[Any, _Worker] = {}
                    for worker in self._workers:
                        if worker.state != _DEAD:
                            owners[worker.conn] = worker
                            owners[worker.process.sentinel] = worker
                    timeout = self._next_timeout()
                for ready in wait([self._wake_r, *owners], timeout):
                    if ready is self._wake_r:
                        self._drain_wakeups()
                    elif owners[ready].state != _DEAD:
                        self._on_ready(owners[ready], from_pipe=ready is owners[ready].conn)
                self._enforce_deadlines()
        except BaseException as exc:  # a bug here must fail every call, never hang it
            log.exception("the pool dispatcher failed; failing every call")
            self._fail_all(WorkerStartupError(f"the pool dispatcher failed: {exc!r}"))
        finally:
            self._shutdown_workers()

    def _plan(self) -> list[tuple[_Worker, _Call]]:
        """Pair queued calls with idle workers, under the lock; sending happens outside it."""
        sends = []
        with self._lock:
            idle = [w for w in self._workers if w.state == _IDLE]
            while idle and self._queue:
                call = self._queue.popleft()
                worker = idle.pop()
                worker.state, worker.call = _BUSY, call
                call.state, call.worker = "running", worker
                call.started = time.monotonic()
                call.deadline = call.started + call.timeout if call.timeout else None
                self._running.add(call)
                sends.append((worker, call))
            self._admit_waiting()
        for _, call in sends:  # outside the lock: a callback may call into the pool
            if call.on_start is not None:
                try:
                    call.on_start()
                except Exception:
                    log.exception("the on_start callback of %s failed", call.name)
        return sends

    def _admit_waiting(self) -> None:
        while self._waiting and len(self._queue) < self.max_queued:
            call = self._waiting.popleft()
            call.state = "queued"
            self._queue.append(call)

    def _send(self, worker: _Worker, call: _Call) -> None:
        try:
            worker.conn.send_bytes(call.id.to_bytes(_worker.CALL_ID_BYTES, "little") + call.payload)
        except OSError:
            pass  # the worker is dying; its sentinel reports it and fails the call

    def _next_timeout(self) -> float | None:
        now = time.monotonic()
        deadlines = [c.deadline for c in self._running if c.deadline is not None]
        if self._state == "closing":
            deadlines.append(self._close_deadline)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _on_ready(self, worker: _Worker, from_pipe: bool) -> None:
        if not from_pipe:
            self._on_death(worker)
            return
        try:
            message = pickle.loads(worker.conn.recv_bytes())
        except (EOFError, OSError):
            self._on_death(worker)
            return
        except Exception as exc:  # a result that pickled in the worker but cannot unpickle here
            call_id = worker.call.id if worker.call else -1
            message = (call_id, False, SerializationError(f"cannot unpickle the result: {exc}"), None)
        self._on_message(worker, message)

    def _on_message(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        if message[0] == "ready":
            with self._lock:
                worker.state, worker.pid = _IDLE, message[1]
                self._startup_deaths = 0
                starting = any(w.state == _STARTING for w in self._workers)
            if not starting:
                self._settle_ready(None)
            return
        if message[0] == "init_failed":
            self._kill(worker)
            self._fail_all(WorkerStartupError(f"the pool initializer failed in a worker:\n{message[1]}"))
            return
        call_id, ok, value, tb = message
        with self._lock:
            call = worker.call
            if call is None or call.id != call_id:
                return
            worker.state, worker.call = _IDLE, None
            self._running.discard(call)
            self._durations.append(time.monotonic() - call.started)
            if call.state != "running":
                return  # cancelled while its answer was on the way: the caller is gone
            call.state = "done"
            self._counts["completed" if ok else "failed"] += 1
        if ok:
            _settle(call, None, value)
        else:
            if tb:
                value.__cause__ = RemoteTraceback(tb)
            _settle(call, value)

    def _on_death(self, worker: _Worker) -> None:
        worker.process.join(timeout=5)
        if worker.process.exitcode is None:  # its pipe broke but it lingers: finish it
            worker.process.kill()
            worker.process.join()
        exitcode = worker.process.exitcode
        with self._lock:
            was_starting = worker.state == _STARTING
            call, killed = worker.call, worker.killed
            worker.call = None
            self._retire(worker)
            crashed = call is not None and not killed and call.state in ("running", "killing")
            if call is not None:
                self._running.discard(call)
                if crashed:
                    cancelled = call.state == "killing"
                    call.state = "done"
                    if not cancelled:
                        self._counts["crashed"] += 1
            if was_starting and not killed:
                self._startup_deaths += 1
            give_up = self._startup_deaths >= _MAX_STARTUP_DEATHS
            replace = self._state == "running" and self._broken is None and not give_up
        if crashed and call is not None:
            message = f"the worker (pid {worker.pid}) running {call.name} died: {_describe_exit(exitcode)}"
            log.warning("%s", message)
            _settle(call, WorkerCrashed(message, pid=worker.pid, exitcode=exitcode))
        if give_up:
            self._fail_all(WorkerStartupError(
                f"{self._startup_deaths} workers in a row died while starting ({_describe_exit(exitcode)})"
            ))
        elif replace:
            self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        try:
            fresh = self._spawn(worker.index)
        except Exception as exc:  # out of file descriptors, forkserver gone...
            self._fail_all(WorkerStartupError(f"could not start a replacement worker: {exc}"))
            return
        with self._lock:
            self._counts["restarts"] += 1
            self._workers[self._workers.index(worker)] = fresh

    def _retire(self, worker: _Worker) -> None:
        worker.state = _DEAD
        worker.conn.close()
        worker.lifeline.close()
        if worker.process.exitcode is not None:
            worker.process.close()

    def _fail_all(self, error: WorkerStartupError) -> None:
        """The pool cannot serve: fail every call, report once, and refuse new calls."""
        with self._lock:
            first = self._broken is None
            if first:
                self._broken = error
                log.error("%s", error)
            pending = [*self._queue, *self._waiting, *self._running]
            self._queue.clear()
            self._waiting.clear()
            for call in self._running:
                if call.worker is not None and call.worker.state != _DEAD:
                    self._kill(call.worker)
            self._running.clear()
            pending = [call for call in pending if call.state != "done"]
            for call in pending:
                call.state = "done"
        self._settle_ready(error)
        for call in pending:
            _settle(call, error)

    def _kill(self, worker: _Worker) -> None:
        worker.killed = True
        worker.process.kill()

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        doomed: list[tuple[_Call, BaseException | None]] = []
        with self._lock:
            closing_over = self._state == "closing" and now >= self._close_deadline
            for call in list(self._running):
                if call.state == "killing":
                    reason: BaseException | None = None  # cancelled: the caller is gone
                elif call.deadline is not None and now >= call.deadline:
                    self._counts["timeouts"] += 1
                    reason = TimeoutError(
                        f"{call.name} did not finish within {call.timeout}s; its worker was killed and replaced"
                    )
                elif closing_over:
                    reason = PoolClosed("the pool closed before this call finished; its worker was killed")
                else:
                    continue
                self._running.discard(call)
                assert call.worker is not None
                self._kill(call.worker)
                call.worker.call = None
                call.state = "done"
                doomed.append((call, reason))
            if closing_over:
                for call in self._queue:
                    call.state = "done"
                    doomed.append((call, PoolClosed("the pool closed before this call started")))
                self._queue.clear()
        for call, reason in doomed:
            if reason is not None:
                _settle(call, reason)

    def _finished_closing(self) -> bool:
        with self._lock:
            if self._state != "closing":
                return False
            return self._broken is not None or (not self._queue and not self._running)

    def _shutdown_workers(self) -> None:
        """The dispatcher's last act: stop every worker, settle what is left, release descriptors."""
        with self._lock:
            if self._state == "running":
                self._state = "closing"
            workers = [w for w in self._workers if w.state != _DEAD]
            leftover = [call for call in self._running if call.state != "done"]
            self._running.clear()
            for call in leftover:
                call.state = "done"
        for worker in workers:
            try:
                worker.conn.send_bytes(b"")
            except OSError:
                pass
        deadline = time.monotonic() + 5.0
        for worker in workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            self._retire(worker)
        for call in leftover:
            _settle(call, PoolClosed("the pool closed before this call finished"))
        with self._lock:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1
            self._state = "closed"
        _live_pools.discard(self)


def _payload(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None) -> bytes:
    """The pickled call both backends send; refusing bad timeouts and unpicklable calls here, in the caller."""
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    try:
        return pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise SerializationError(
            f"cannot send {_name(fn)} to a worker process: {exc}. Functions must be defined at "
            "module level and arguments must be picklable."
        ) from exc


def _settle(call: _Call, error: BaseException | None, result: Any = None) -> None:
    """Settle a call's future unless its caller already cancelled it (never under the pool lock)."""
    try:
        if error is None:
            call.future.set_result(result)
        else:
            call.future.set_exception(error)
    except concurrent.futures.InvalidStateError:
        pass


def _percentile(ordered: list[float], q: int) -> float:
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


_live_pools: weakref.WeakSet[SharedPool] = weakref.WeakSet()


@atexit.register
def _kill_leftover_workers() -> None:
    """No child outlives its pool, even when the program forgot to close it."""
    for pool in list(_live_pools):
        pool.close_sync(timeout=0)


_default_pool: SharedPool | None = None
_default_lock = threading.Lock()


def get_pool() -> SharedPool:
    """The one pool of this process, created on first use (not started).

    Both stacks call this, so legacy and modern share one set of workers sized
    to the container's CPU budget. Whoever hosts the process starts and closes it.
    """
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            _default_pool = SharedPool()
        return _default_pool


def set_pool(pool: SharedPool | None) -> SharedPool | None:
    """Make ``pool`` the process's shared pool (before anything calls :func:`get_pool`); returns the previous one."""
    global _default_pool
    with _default_lock:
        previous, _default_pool = _default_pool, pool
        return previous
