"""One shared pool per process: worker processes for CPU work, threads for blocking IO.

:class:`SharedPool` is the public face: sizing from the CPU and memory
budget, the lifecycle, ``run``/``defer``/``submit``, the threads and
``stats()``. Process work goes to a backend (:mod:`bridge.pool.backend`):
the local worker processes (:mod:`bridge.pool.local`) or a Dask cluster
(:mod:`bridge.pool.dask`).

The local backend lives on the event loop that started the pool (its *home*
loop: uvicorn's, or the asyncio reactor's). ``run`` and ``defer`` called on
that loop's thread take the direct path: no thread hop, no lock, no
``concurrent.futures.Future``. A call from any other thread or loop (a reactor
in its own thread, a worker thread, ``submit``) is handed to the home loop
with ``call_soon_threadsafe`` and answered through a ``concurrent.futures``
future. :meth:`SharedPool.start_sync` (no loop at hand) gives the pool a
private loop in a thread of its own, and every call takes that second path.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import functools
import itertools
import multiprocessing
import os
import pickle
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ..cpu import cpu_budget
from ..errors import PoolClosed, PoolUnavailable, SerializationError
from .backend import BACKEND_ENV, parse_backend
from .local import DEFAULT_CANCEL_GRACE, LocalBackend, LocalConfig
from .memory import memory_budget
from .memory import worker_memory as memory_ceiling
from .protocol import DEFERRED, LOOP, THREADSAFE, Call, PoolStats, encode_call

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from .dask import DaskBackend

__all__ = ["SharedPool", "CallFuture", "get_pool", "set_pool", "parse_backend", "BACKEND_ENV"]

T = TypeVar("T")
StartMethod = Literal["forkserver", "spawn"]

#: Calls a worker's pipe may hold by default (1 running + prefetched), when calls are short.
DEFAULT_PREFETCH = 32
#: Of the memory budget, what calls waiting for queue room may hold by default (their pickled arguments).
WAITING_SHARE = 0.25


class SharedPool:
    """A process pool sized to the CPU budget, plus a bounded thread pool.

    ``processes`` defaults to the CPU budget minus one (at least one), leaving a
    CPU for the event loop; ``worker_threads`` (the cap on native threads inside
    each worker) defaults to ``budget // processes`` so workers x threads never
    exceed the budget.

    Admission: ``max_queued`` bounds calls accepted but not yet running
    (prefetched ones included); past it, ``run`` and ``defer`` wait for room, or
    raise :class:`PoolBusy` with ``block=False``. Calls waiting for room hold
    only their pickled arguments, which the caller had in memory already, so by
    default the backlog is bounded in bytes, not in count: ``max_waiting_bytes``
    (default a quarter of the memory budget; the first waiting call is always
    accepted) and ``max_waiting`` (default None: no count limit) refuse a burst
    with :class:`PoolBusy` at once. ``asyncio.gather`` over thousands of calls
    therefore just works; a server stays bounded by its front door's admission
    limit (``max_inflight``), which caps how many requests can fan out at once.

    ``initializer(*initargs)`` runs once in every worker before its first call,
    the place to load a model. It must be picklable (a module-level function).

    ``worker_memory`` is each worker's memory ceiling (bytes, or ``"2G"``; 0
    disables it; default from ``CUTOVER_WORKER_MEMORY``, else 80 % of the
    memory budget split among the workers; see :mod:`bridge.pool.memory`). A
    call that allocates past it fails with ``MemoryError`` and its worker is
    replaced. ``prefetch`` caps the calls one worker's pipe holds (1 disables
    prefetch).

    ``cancel_grace`` is how long a cancelled call that is already running may
    still answer (its result dropped) before its worker is killed and replaced:
    a replacement runs the initializer again, which for loaded models costs
    far more than letting a short call end. The caller is cancelled at once
    either way. 0 kills at once. Local workers only: on Dask a cancel is Dask's.

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
        max_waiting_bytes: int | None = None,
        worker_threads: int | None = None,
        worker_memory: int | str | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        preload: tuple[str, ...] = (),
        startup_timeout: float = 60.0,
        backend: str | None = None,
        cancel_grace: float = DEFAULT_CANCEL_GRACE,
    ) -> None:
        chosen = backend if backend is not None else os.environ.get(BACKEND_ENV, "")
        self._dask_address = parse_backend(chosen)
        self.backend = "local" if self._dask_address is None else chosen.strip()
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
        if max_waiting is not None and max_waiting < 0:
            raise ValueError(f"max_waiting must be at least 0, got {max_waiting}")
        self.max_waiting = max_waiting
        if max_waiting_bytes is not None and max_waiting_bytes < 0:
            raise ValueError(f"max_waiting_bytes must be at least 0, got {max_waiting_bytes}")
        self.max_waiting_bytes = (
            max_waiting_bytes if max_waiting_bytes is not None else int(memory_budget() * WAITING_SHARE)
        )
        if not cancel_grace >= 0:
            raise ValueError(f"cancel_grace must be at least 0, got {cancel_grace}")
        self.cancel_grace = float(cancel_grace)
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self.prefetch = prefetch
        self.worker_memory = memory_ceiling(worker_memory, self.processes)
        method = start_method or ("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
        if method not in ("forkserver", "spawn"):
            raise ValueError(
                f"start method {method!r} is not allowed: fork from a process that runs threads "
                "or a reactor can deadlock the child (cpython #84559); use 'forkserver' or 'spawn'"
            )
        self.start_method: StartMethod = method
        self._preload = ("bridge.pool.worker", *preload)
        self._startup_timeout = startup_timeout
        try:
            self._init_blob = pickle.dumps((initializer, tuple(initargs)))
        except Exception as exc:
            raise SerializationError(f"the pool initializer cannot be pickled: {exc}") from exc

        self._lock = threading.Lock()  # lifecycle only; never on the call path
        self._state = "new"  # new -> starting -> running -> closing -> closed
        self._ids = itertools.count(1)
        self._local: LocalBackend | None = None
        self._dask: DaskBackend | None = None
        self._home: asyncio.AbstractEventLoop | None = None
        self._home_thread: int | None = None
        self._own_loop_thread: threading.Thread | None = None
        self._thread_pool: concurrent.futures.ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._state == "running"

    def _begin_start(self) -> None:
        with self._lock:
            if self._state != "new":
                raise PoolClosed(f"a pool can start once; this one is {self._state}")
            self._state = "starting"

    async def start(self) -> None:
        """Start the workers and wait until each has run its initializer.

        The local workers are then dispatched on this loop. Raises
        :class:`MainModuleGuardError` before any worker starts if the main
        script lacks its guard, and :class:`WorkerStartupError` (with the
        worker's traceback) if the initializer fails.
        """
        loop = asyncio.get_running_loop()
        if self._dask_address is not None:
            await loop.run_in_executor(None, self._start_dask)
            return
        self._begin_start()
        await self._start_local(loop)

    async def _start_local(self, loop: asyncio.AbstractEventLoop) -> None:
        config = LocalConfig(
            processes=self.processes, worker_threads=self.worker_threads, init_blob=self._init_blob,
            start_method=self.start_method, preload=self._preload, startup_timeout=self._startup_timeout,
            max_queued=self.max_queued, max_waiting=self.max_waiting, max_waiting_bytes=self.max_waiting_bytes,
            memory_limit=self.worker_memory, prefetch=self.prefetch, cancel_grace=self.cancel_grace,
        )
        local = LocalBackend(config, loop)
        self._home, self._home_thread, self._local = loop, threading.get_ident(), local
        self._thread_pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="cutover-io")
        _live_pools.add(self)
        try:
            await local.start()
        except BaseException:
            self._finish_close()
            raise
        with self._lock:
            if self._state == "starting":
                self._state = "running"

    def start_sync(self) -> None:
        """Blocking form of :meth:`start`, for scripts and threads without a loop.

        The local workers get a private event loop in a thread of their own;
        every call then crosses threads (correct, a little slower than ``start``).
        """
        if self._dask_address is not None:
            self._start_dask()
            return
        self._begin_start()
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_run_loop, args=(loop,), name="cutover-pool", daemon=True)
        thread.start()
        self._own_loop_thread = thread
        try:
            asyncio.run_coroutine_threadsafe(self._start_local(loop), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            raise

    def _start_dask(self) -> None:
        """Connect to the Dask scheduler and register the initializer; threads stay local."""
        self._begin_start()
        try:
            from .dask import DaskBackend
        except ImportError as exc:
            self._state = "new"
            raise PoolUnavailable(
                f"{BACKEND_ENV}={self.backend} needs dask.distributed: pip install 'cutover[dask]' ({exc})"
            ) from exc
        backend = DaskBackend(
            self.backend, init_blob=self._init_blob, worker_threads=self._explicit_worker_threads,
            max_queued=self.max_queued, max_waiting=self.max_waiting, max_waiting_bytes=self.max_waiting_bytes,
            connect_timeout=self._startup_timeout,
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
            self._thread_pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="cutover-io")
            self._state = "running"
            _live_pools.add(self)

    async def close(self, timeout: float = 10.0) -> None:
        """Stop accepting calls, let queued and running ones finish for up to
        ``timeout`` seconds, then fail the rest with :class:`PoolClosed`, kill
        their workers and reap every child. Safe to call more than once.

        Calls running in the pool's threads cannot be interrupted: they are left
        to finish on their own, and thread calls not yet started are dropped."""
        loop = asyncio.get_running_loop()
        home = self._home
        if self._local is None or home is None:
            await loop.run_in_executor(None, self.close_sync, timeout)
        elif home is loop:
            await self._close_local(timeout)
        elif home.is_running():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._close_local(timeout), home))
            self._join_own_loop()
        else:
            self.close_sync(timeout)

    async def _close_local(self, timeout: float) -> None:
        """On the home loop."""
        with self._lock:
            if self._state in ("starting", "running"):
                self._state = "closing"
        if self._thread_pool is not None:
            self._thread_pool.shutdown(wait=False, cancel_futures=True)
        assert self._local is not None
        await self._local.close(timeout)
        self._finish_close()

    def _finish_close(self) -> None:
        with self._lock:
            self._state = "closed"
        if self._thread_pool is not None:
            self._thread_pool.shutdown(wait=False, cancel_futures=True)
        _live_pools.discard(self)
        if self._own_loop_thread is not None and self._home is not None:
            self._home.call_soon_threadsafe(self._home.stop)

    def _join_own_loop(self) -> None:
        thread = self._own_loop_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def close_sync(self, timeout: float = 10.0) -> None:
        """Blocking form of :meth:`close` (from the pool's own loop thread it only starts the close)."""
        if self._dask is not None or self._dask_address is not None:
            self._close_dask(timeout)
            return
        with self._lock:
            if self._state == "new":
                self._state = "closed"
                return
        home, local = self._home, self._local
        if home is None or local is None:
            return
        if home.is_closed():
            local.kill_now()  # the loop is gone: no one else will reap the workers
            self._finish_close()
            return
        if not home.is_running():  # its loop is idle (between run_until_complete calls): close on it
            home.run_until_complete(self._close_local(timeout))
            return
        if threading.get_ident() == self._home_thread:
            home.create_task(self._close_local(timeout))  # cannot block the loop it needs
            return
        asyncio.run_coroutine_threadsafe(self._close_local(timeout), home).result()
        self._join_own_loop()

    def _kill_at_exit(self) -> None:
        """At interpreter exit: no loop will run again, so kill and reap the workers here."""
        if self._local is not None:
            self._local.kill_now()
            self._state = "closed"
        else:
            self.close_sync(timeout=0)

    def _close_dask(self, timeout: float) -> None:
        with self._lock:
            if self._dask is None:  # not connected yet: a start in progress sees this and gives up
                self._state = "closed"
                return
            if self._state != "running":
                return
            self._state = "closing"
        if self._thread_pool is not None:
            self._thread_pool.shutdown(wait=False, cancel_futures=True)
        try:
            self._dask.close(timeout)
        finally:
            with self._lock:
                self._state = "closed"
            _live_pools.discard(self)

    async def __aenter__(self) -> SharedPool:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ calling

    def run(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None, block: bool = True,
            on_start: Callable[[], None] | None = None, **kwargs: Any) -> Awaitable[T]:
        """Run ``fn(*args, **kwargs)`` in a worker process; await the result.

        ``timeout`` bounds the call's time in a worker, from the moment a worker
        starts it; past it the worker is killed and replaced and the call raises
        :class:`TimeoutError`. Cancelling the awaiting task cancels the call: a
        call not started never runs, a running one has its worker killed. The
        function's own exception is raised as itself, with the worker's
        traceback as its ``__cause__``. ``on_start()`` is called once, on this
        loop, when a worker begins executing the call (never for a call that
        never started).

        On the pool's own loop this returns a :class:`CallFuture` (like
        ``loop.run_in_executor``: ``gather`` needs no Task per call), elsewhere
        a coroutine; both are awaited, gathered and given to ``create_task`` alike,
        and a refusal (:class:`PoolBusy`, :class:`PoolClosed`, an argument that
        cannot be pickled) is raised where the result is awaited.
        """
        local = self._local
        if local is not None:
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is self._home:
                future: CallFuture[T] = CallFuture(loop=loop)
                try:
                    if self._state != "running":
                        raise PoolClosed(self._not_running_message())
                    payload, buffers = encode_call(fn, args, kwargs, timeout, True)
                    call = Call(next(self._ids), fn, payload, timeout, future, LOOP, on_start, buffers)
                    local.submit(call, block)
                except Exception as exc:  # noqa: BLE001 - the caller's answer, given where it awaits
                    future.set_exception(exc)
                else:
                    future.call = call
                    future.canceller = local.cancel
                return future
        return self._run_elsewhere(fn, args, kwargs, timeout, block, on_start)

    async def _run_elsewhere(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any],
                             timeout: float | None, block: bool, on_start: Callable[[], None] | None) -> T:
        """:meth:`run` from another loop or thread, or on Dask: through a ``concurrent.futures`` future."""
        loop = asyncio.get_running_loop()
        hook = _on_loop(loop, on_start)
        return await asyncio.wrap_future(self._submit_threadsafe(fn, args, kwargs, timeout, block, hook))

    def defer(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None, block: bool = True,
              on_start: Callable[[], None] | None = None, **kwargs: Any) -> Deferred[T]:
        """Twisted form of :meth:`run`: a Deferred; ``Deferred.cancel()`` cancels the call.

        ``on_start()`` is called in the reactor thread when a worker begins the call.
        """
        local = self._local
        if local is not None and threading.get_ident() == self._home_thread:
            from twisted.internet.defer import Deferred

            holder: list[Call] = []
            d: Deferred[T] = Deferred(lambda _: local.cancel(holder[0]))
            call = self._call(fn, args, kwargs, timeout, d, DEFERRED, on_start)
            holder.append(call)
            local.submit(call, block)
            return d
        from ..deferreds import deferred_from_future

        return deferred_from_future(self._submit_threadsafe(fn, args, kwargs, timeout, block, _in_reactor(on_start)))

    def submit(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None, block: bool = True,
               on_start: Callable[[], None] | None = None, **kwargs: Any) -> concurrent.futures.Future[T]:
        """Thread-safe form for code that holds neither a loop nor a reactor.

        ``on_start()`` is called in the pool's dispatch thread (its home loop's
        thread, or a Dask client thread) when a worker begins the call: keep it
        quick and thread-safe. Refusals (:class:`PoolBusy`) raise here when
        called on the pool's loop thread, else they settle the future. Never
        block the pool's own loop thread on the future: that loop answers it.
        """
        return self._submit_threadsafe(fn, args, kwargs, timeout, block, on_start)

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None,
              target: Any, kind: int, on_start: Callable[[], None] | None) -> Call:
        if self._state != "running":
            raise PoolClosed(self._not_running_message())
        payload, buffers = encode_call(fn, args, kwargs, timeout, out_of_band=self._local is not None)
        return Call(next(self._ids), fn, payload, timeout, target, kind, on_start, buffers)

    def _submit_threadsafe(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                           timeout: float | None, block: bool,
                           on_start: Callable[[], None] | None) -> concurrent.futures.Future[Any]:
        """The path from any thread: a ``concurrent.futures`` future settled from the backend's thread."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        call = self._call(fn, args, kwargs, timeout, future, THREADSAFE, on_start)
        dask = self._dask
        if dask is not None:
            dask.submit(call, block)
            future.add_done_callback(functools.partial(_cancel_if_cancelled, dask.cancel, call))
            return future
        local, home = self._local, self._home
        assert local is not None and home is not None
        if threading.get_ident() == self._home_thread:
            local.submit(call, block)
            future.add_done_callback(functools.partial(_cancel_if_cancelled, local.cancel, call))
            return future
        future.add_done_callback(functools.partial(_cancel_if_cancelled, functools.partial(_soon, home, local.cancel), call))
        try:
            home.call_soon_threadsafe(_submit_on_loop, local, call, block)
        except RuntimeError as exc:  # the home loop is closed
            raise PoolClosed(f"the pool's event loop is closed: {exc}") from None
        return future

    async def run_in_thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run blocking IO in the pool's threads, with the caller's contextvars."""
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        return await loop.run_in_executor(self._threads(), functools.partial(ctx.run, fn, *args, **kwargs))

    def defer_to_thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Deferred[T]:
        """Twisted form of :meth:`run_in_thread`; cancelling drops a call not yet started."""
        from ..deferreds import deferred_from_future

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

    # ------------------------------------------------------------------ stats

    def stats(self) -> PoolStats:
        """A snapshot for ``/status``; never waits on a worker or the network."""
        if self._dask_address is not None:
            return self._dask_stats()
        local = self._local
        if local is None:
            view: dict[str, Any] = dict.fromkeys(
                ("alive", "busy", "queued", "waiting", "completed", "failed", "crashed", "timeouts", "cancelled",
                 "restarts"), 0)
            view.update(run_time_ms={f"p{q}": 0.0 for q in (50, 90, 99)}, health="not running")
        else:
            view = local.stats()
            if self._state != "running" and view["health"] == "ok":
                view["health"] = "not running"
        return PoolStats(workers=self.processes, threads=self.threads, worker_threads=self.worker_threads,
                         start_method=self.start_method, backend=self.backend, **view)

    def _dask_stats(self) -> PoolStats:
        backend = self._dask
        if backend is None or self._state != "running":
            zero = dict.fromkeys(("workers", "alive", "busy", "queued", "waiting", "completed", "failed", "crashed",
                                  "timeouts", "cancelled", "restarts"), 0)
            return PoolStats(**zero, threads=self.threads, worker_threads=self.worker_threads, start_method="dask",
                             run_time_ms={f"p{q}": 0.0 for q in (50, 90, 99)}, backend=self.backend,
                             health="not running")
        return PoolStats(threads=self.threads, worker_threads=self._explicit_worker_threads or 1,
                         start_method="dask", backend=self.backend, **backend.stats())


class CallFuture(asyncio.Future[T]):
    """The future :meth:`SharedPool.run` returns on the pool's loop; cancelling it cancels the call.

    ``run`` used to be a coroutine function: ``create_task(pool.run(...))`` and
    ``TaskGroup.create_task`` still take its result, since it also speaks the
    coroutine protocol (``send``, ``throw``, ``close``: those of the future's own
    ``__await__``). ``gather`` and ``ensure_future`` take it as the future it is.
    """

    __slots__ = ("call", "canceller", "_waiting")
    call: Call
    canceller: Callable[[Call], None]

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        canceller = getattr(self, "canceller", None)
        if canceller is not None:
            self.canceller = None  # type: ignore[assignment]
            canceller(self.call)
        return True

    def _steps(self) -> Any:
        waiting = getattr(self, "_waiting", None)
        if waiting is None:
            waiting = self._waiting = self.__await__()
        return waiting

    def send(self, value: Any) -> Any:
        return self._steps().send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if val is None and tb is None:
            return self._steps().throw(typ)
        return self._steps().throw(typ, val, tb)

    def close(self) -> None:
        self._waiting = None


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


def _submit_on_loop(local: LocalBackend, call: Call, block: bool) -> None:
    """On the home loop: accept a call from another thread, or fail its future with the refusal."""
    if call.target.cancelled():
        return  # the caller gave up before the call reached the loop
    try:
        local.submit(call, block)
    except Exception as exc:  # noqa: BLE001 - PoolBusy, PoolClosed, a broken pool: the caller's answer
        call.reject(exc)


def _soon(loop: asyncio.AbstractEventLoop, fn: Callable[[Call], None], call: Call) -> None:
    try:
        loop.call_soon_threadsafe(fn, call)
    except RuntimeError:
        pass  # the loop is closed: the pool is gone and so is the call


def _cancel_if_cancelled(cancel: Callable[[Call], None], call: Call, future: concurrent.futures.Future[Any]) -> None:
    if future.cancelled():
        cancel(call)


def _on_loop(loop: asyncio.AbstractEventLoop, hook: Callable[[], None] | None) -> Callable[[], None] | None:
    """``hook`` called on ``loop`` (the caller's), from whichever thread reports the start."""
    if hook is None:
        return None

    def notify() -> None:
        try:
            loop.call_soon_threadsafe(hook)
        except RuntimeError:
            pass  # the caller's loop is closed

    return notify


def _in_reactor(hook: Callable[[], None] | None) -> Callable[[], None] | None:
    if hook is None:
        return None

    def notify() -> None:
        from twisted.internet import reactor

        reactor.callFromThread(hook)  # type: ignore[attr-defined]

    return notify


_live_pools: weakref.WeakSet[SharedPool] = weakref.WeakSet()


@atexit.register
def _kill_leftover_workers() -> None:
    """No child outlives its pool, even when the program forgot to close it."""
    for pool in list(_live_pools):
        try:
            pool._kill_at_exit()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


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
