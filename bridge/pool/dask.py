"""The shared pool's process work on a Dask cluster (``CUTOVER_POOL=dask://host:port``).

:class:`~bridge.pool.SharedPool` delegates ``run``, ``defer`` and ``submit`` here
when its backend is a Dask scheduler; threads (``run_in_thread``,
``defer_to_thread``) stay in this process. Handler code does not change.
``distributed`` is imported only by this module, so it stays an optional
dependency (``pip install cutover[dask]``).

What each promise of the local pool becomes on a cluster:

* **Results and errors.** A call travels as the same pickle the local pool
  sends; the local worker's own :func:`~bridge.pool.worker.run_payload` runs
  it on the Dask worker and returns the same encoded outcome. The function's own exception is
  raised as itself, with the worker's traceback as its ``__cause__``
  (:class:`~bridge.errors.RemoteTraceback`), and an unpicklable function or
  argument raises :class:`~bridge.errors.SerializationError` at submission, as
  locally. Dask's own "erred" state therefore only ever means the cluster
  failed, never the function.
* **Timeouts.** The caller gets the builtin :class:`TimeoutError`, as locally,
  and the Dask task is released: if it is still queued it never runs. A task
  already running on a worker *cannot be killed*: Dask does not interrupt a
  worker thread, so it runs to completion there, holding that worker thread,
  and its result is dropped. The clock starts when the call is handed to the
  cluster (queueing at the scheduler included), because the client does not
  learn when a worker starts a task without a round trip per call. Locally it
  starts when a worker takes the call, and the worker is killed at the deadline.
  For the same reason ``on_start`` fires when the call is handed to the cluster.
* **Cancellation.** Cancelling the caller's task, Deferred or future releases
  the Dask task: a queued call never runs; a running one runs to completion on
  its worker and its result is dropped (locally its worker is killed).
* **A worker lost mid-task** (killed, out of memory) fails only the calls it
  held, with :class:`~bridge.errors.WorkerCrashed`, once the scheduler gives
  up on them. The scheduler decides: it re-runs a task whose worker died up to
  ``distributed.scheduler.allowed-failures`` times (default 3) before raising
  ``KilledWorker``, which is what we map. We honour the scheduler's setting;
  set it to 0 on the scheduler for the local pool's behaviour (fail at once,
  never run a call twice). The worker's nanny restarts it.
* **Scheduler gone.** In-flight calls fail with
  :class:`~bridge.errors.PoolUnavailable`, new calls raise it at once while the
  client reconnects, and ``stats().health`` reads ``"scheduler unreachable"``.
  The supervisor thread keeps trying (a new client once Dask's own retries,
  ``startup_timeout`` long, give up) and registers the initializer again on a
  scheduler that comes back; ``restarts`` counts reconnections. A scheduler
  that cannot be reached at start raises it from ``start()``.
* **Back-pressure.** ``max_queued`` bounds the calls this process has in flight
  on the cluster; past it calls wait here (or raise
  :class:`~bridge.errors.PoolBusy` with ``block=False``, or once ``max_waiting``
  calls or ``max_waiting_bytes`` of arguments already wait), as locally.
* **The initializer** becomes a Dask worker plugin, registered on start:
  every worker runs ``initializer(*initargs)`` once, in a worker thread (so the
  worker's event loop keeps its heartbeats while a model loads), including
  workers that join or restart later. Registering the same initializer again
  (a second pool, a second service) does not run it twice in a worker.
* **stats()** never waits on the network: the cluster's worker and thread
  counts are cached and refreshed by a supervisor thread once a second;
  ``busy``/``queued`` are this process's calls in flight, split by the
  cluster's thread count.

Workers must be able to import the project (same code and virtualenv on every
machine): functions travel by reference, as with the local pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import pickle
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distributed import Client, WorkerPlugin
from distributed.client import FutureCancelledError

from ..errors import PoolBusy, PoolClosed, PoolUnavailable, WorkerCrashed, WorkerStartupError
from . import wire
from .backend import parse_backend
from .protocol import Call, RunStats, decode_error, decode_result
from .worker import WORKER_THREADS_ENV, cap_threads, error_blob, run_payload

if TYPE_CHECKING:
    from distributed import Future as DaskFuture
    from distributed.worker import Worker

__all__ = ["DaskBackend", "InitializerPlugin"]

log = logging.getLogger(__name__)
_REFRESH_EVERY = 1.0  # seconds between background refreshes of the cluster's worker count


# ---------------------------------------------------------------------- worker side

_initialized: set[str] = set()  # digests of initializers already run in this worker process
_init_lock = threading.Lock()


def _cap_threads(threads: int) -> None:
    cap_threads(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)


def _initialize(digest: str, init_blob: bytes, threads: int | None) -> None:
    with _init_lock:
        if digest in _initialized:
            return
        # Without an explicit cap, a worker started with CUTOVER_WORKER_THREADS keeps it; else 1
        # native thread per Dask worker thread, the right share for `--nworkers N --nthreads 1`.
        cap = threads if threads is not None else max(1, int(os.environ.get(WORKER_THREADS_ENV, "1") or 1))
        _cap_threads(cap)
        initializer, initargs = pickle.loads(init_blob)
        if initializer is not None:
            initializer(*initargs)
        _initialized.add(digest)


class InitializerPlugin(WorkerPlugin):
    """Runs the pool's initializer once in every worker process, the Dask form of a pool initializer."""

    #: Registered once per scheduler: a second pool with the same initializer does not re-run it.
    idempotent = True

    def __init__(self, digest: str, init_blob: bytes, threads: int | None) -> None:
        self.name = f"cutover-init-{digest}"
        self.digest, self.init_blob, self.threads = digest, init_blob, threads

    async def setup(self, worker: Worker) -> None:
        loop = asyncio.get_running_loop()
        try:  # off the worker's event loop: loading a model must not stall its heartbeats
            await loop.run_in_executor(None, _initialize, self.digest, self.init_blob, self.threads)
        except BaseException as exc:
            text = "".join(traceback.format_exception(exc))
            raise WorkerStartupError(f"the pool initializer failed on worker {worker.address}:\n{text}") from None


def _run_payload(payload: bytes, init: tuple[str, bytes, int | None] | None = None) -> tuple[int, bytes]:
    """Run one pickled ``(fn, args, kwargs)`` on a worker; the same encoded outcome as a local worker's.

    ``init`` makes sure the pool's initializer ran in this worker first (once: it is keyed by its
    digest). The plugin runs it eagerly; this covers a worker that takes a call before the plugin
    reached it, as after a scheduler restart, when the plugin is registered again a moment later.
    """
    if init is not None:
        try:
            _initialize(*init)
        except BaseException as exc:  # noqa: BLE001 - the call's failure, reported as such
            return wire.ERROR, error_blob(exc)
    return run_payload(payload)


# ---------------------------------------------------------------------- client side


@dataclass(eq=False)
class _Task:
    """What a call holds while on the cluster (``Call.extra``)."""

    task: DaskFuture | None = None
    sent: float = 0.0
    deadline: asyncio.TimerHandle | None = None  # on the client's loop; cancelled once the call is done
    loop: asyncio.AbstractEventLoop | None = None


class DaskBackend:
    """A Dask ``Client`` behind the shared pool's calls; see the module docstring for the semantics."""

    loop_bound = False

    def __init__(self, url: str, *, init_blob: bytes, worker_threads: int | None, max_queued: int,
                 connect_timeout: float, max_waiting: int | None = None, max_waiting_bytes: int | None = None) -> None:
        address = parse_backend(url)
        if address is None:
            raise ValueError(f"{url!r} is not a Dask backend")
        self.url, self.address = url, address
        self.max_queued = max_queued
        self.max_waiting = max_waiting
        self.max_waiting_bytes = max_waiting_bytes
        self._waiting_bytes = 0
        self._init_blob = init_blob
        self._worker_threads = worker_threads
        self._connect_timeout = connect_timeout
        self._client: Client | None = None
        self._lock = threading.RLock()
        self._open = False
        self._waiting: deque[Call] = deque()
        self._in_flight: set[Call] = set()
        self._idle = threading.Condition(self._lock)
        self._run_stats = RunStats()
        self._counts = self._run_stats.counts
        self._cluster = {"n_workers": 0, "total_threads": 0}
        self._plugin = InitializerPlugin("", init_blob, worker_threads)
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._scheduler_id = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect, then register the initializer on every worker (blocking: run it off the loop)."""
        digest = hashlib.sha256(self._init_blob + repr(self._worker_threads).encode()).hexdigest()[:16]
        self._plugin = InitializerPlugin(digest, self._init_blob, self._worker_threads)
        client = self._connect()
        with self._lock:
            self._client = client
            self._open = True
        self._supervisor = threading.Thread(target=self._supervise, name="cutover-dask-supervisor", daemon=True)
        self._supervisor.start()
        log.info("shared pool on Dask scheduler %s: %d workers, %d threads", self.address,
                 self._cluster["n_workers"], self._cluster["total_threads"])

    def _connect(self) -> Client:
        """A client with the initializer registered and the cluster's size read (blocking)."""
        try:
            client = Client(self.address, timeout=self._connect_timeout, set_as_default=False)
        except OSError as exc:
            raise PoolUnavailable(
                f"cannot reach the Dask scheduler at {self.address} (CUTOVER_POOL={self.url}): {exc}"
            ) from exc
        try:
            self._register(client)
            self._scheduler_id = self._read_size(client)
        except BaseException:
            client.close()
            raise
        return client

    def _register(self, client: Client) -> None:
        """Register the initializer plugin (idempotent: a scheduler that has it keeps it)."""
        plugin = self._plugin
        try:
            client.register_plugin(plugin, name=plugin.name)
        except WorkerStartupError:
            self._unregister(client)
            raise
        except OSError:
            raise
        except Exception as exc:
            self._unregister(client)
            raise WorkerStartupError(f"could not register the pool initializer on the cluster: {exc!r}") from exc

    def _unregister(self, client: Client) -> None:
        try:
            client.unregister_worker_plugin(self._plugin.name)
        except Exception:  # noqa: BLE001 - best effort: the registration itself failed
            log.debug("could not unregister %s", self._plugin.name, exc_info=True)

    def _read_size(self, client: Client) -> str:
        """Cache the cluster's size; returns the scheduler's id, which changes when it restarts."""
        info = client.scheduler_info(n_workers=0)
        self._cluster = {"n_workers": int(info.get("n_workers", 0)), "total_threads": int(info.get("total_threads", 0))}
        return str(info.get("id", ""))

    def _supervise(self) -> None:
        """Once a second, off every caller's thread: read the cluster's size, and heal the connection.

        The client retries a lost scheduler for ``startup_timeout`` seconds by itself. A scheduler
        that comes back has forgotten our plugin, so it is registered again; a client that gave up
        (closed) is replaced by a new one. Calls in between raise PoolUnavailable.
        """
        while not self._stop.wait(_REFRESH_EVERY):
            client = self._client
            if client is None:
                return
            try:
                if client.status == "running":
                    scheduler_id = self._read_size(client)
                    if scheduler_id != self._scheduler_id:  # the client reconnected to a new scheduler
                        self._register(client)  # which has no plugins yet
                        self._scheduler_id = scheduler_id
                        with self._lock:
                            self._counts["restarts"] += 1
                        log.warning("reconnected to a restarted Dask scheduler at %s", self.address)
                elif client.status in ("closed", "failed"):
                    fresh = self._connect()
                    with self._lock:
                        if not self._open:
                            fresh.close()
                            return
                        self._client = fresh
                        self._counts["restarts"] += 1
                    log.warning("connected a new client to the Dask scheduler at %s", self.address)
                    client.close()
            except Exception:  # noqa: BLE001 - still unreachable: health says so, try again next round
                log.debug("the Dask scheduler at %s is still unreachable", self.address, exc_info=True)

    def close(self, timeout: float) -> None:
        """Fail waiting calls, give in-flight ones up to ``timeout`` seconds, release the rest, disconnect."""
        self._stop.set()
        with self._lock:
            self._open = False
            waiting = list(self._waiting)
            self._waiting.clear()
            for call in waiting:
                call.state = "done"
            self._waiting_bytes = 0
            deadline = time.monotonic() + max(0.0, timeout)
            while self._in_flight and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            leftover = list(self._in_flight)
            self._in_flight.clear()
            for call in leftover:
                call.state = "done"
        for call in waiting:
            call.reject(PoolClosed("the pool closed before this call could be sent to the cluster"))
        for call in leftover:
            _release(call)
            call.reject(PoolClosed(
                "the pool closed before this call finished; a task already running on a Dask worker "
                "runs to completion there and its result is dropped"
            ))
        with self._lock:
            client, self._client = self._client, None
        if self._supervisor is not None:  # bounded: it may be inside a connection attempt, which it drops
            self._supervisor.join(timeout=max(1.0, timeout))
        if client is not None:
            client.close(timeout=max(1.0, timeout))

    # ------------------------------------------------------------------ calling

    def submit(self, call: Call, block: bool) -> None:
        """Hand one call to the cluster, or queue it here while ``max_queued`` are in flight (any thread)."""
        call.extra = _Task()
        with self._lock:
            if not self._open:
                raise PoolClosed("the pool is closing")
            health = self._health()
            if health == "scheduler unreachable":
                raise PoolUnavailable(self._unreachable_message())
            sent = False
            if len(self._in_flight) < self.max_queued and not self._waiting:
                sent = self._send(call)
            elif block and self._has_room_to_wait(len(call.payload)):
                call.state = "waiting"
                self._waiting.append(call)
                self._waiting_bytes += len(call.payload)
            else:
                raise PoolBusy(
                    f"{self.max_queued} calls from this process are already in flight on the Dask "
                    f"cluster at {self.address}" + (f", {len(self._waiting)} more waiting" if block else "")
                    + "; retry later"
                )
        if sent:
            call.notify_start()

    def _has_room_to_wait(self, size: int) -> bool:
        if self.max_waiting is not None and len(self._waiting) >= self.max_waiting:
            return False
        limit = self.max_waiting_bytes
        return limit is None or not self._waiting or self._waiting_bytes + size <= limit

    def _send(self, call: Call) -> bool:
        """Under the lock: submit to the cluster (non-blocking) and arm the timeout; False if the client is gone."""
        client = self._client
        assert client is not None
        extra: _Task = call.extra
        call.state, extra.sent = "submitted", time.monotonic()
        self._in_flight.add(call)
        try:
            init = None if self._plugin is None else (self._plugin.digest, self._plugin.init_blob, self._plugin.threads)
            extra.task = client.submit(_run_payload, call.payload, init, key=f"{call.name}-{uuid.uuid4().hex}", pure=False)
        except Exception as exc:  # the client closed under us
            self._in_flight.discard(call)
            call.state = "done"
            self._settled_later(call, PoolUnavailable(f"{self._unreachable_message()}: {exc}"))
            return False
        call.payload = b""  # the cluster holds it now
        loop = client.loop.asyncio_loop
        # Each call's outcome is awaited on the client's own loop: results come back concurrently,
        # not one round trip at a time through Dask's single done-callback thread.
        asyncio.run_coroutine_threadsafe(self._watch(client, call, extra.task), loop)
        if call.timeout is not None:
            extra.loop = loop
            loop.call_soon_threadsafe(self._arm_deadline, call)
        return True

    def _arm_deadline(self, call: Call) -> None:
        """On the client's loop. A call done before this ran needs no timer."""
        extra: _Task = call.extra
        if call.state != "done" and extra.loop is not None and call.timeout is not None:
            extra.deadline = extra.loop.call_later(call.timeout, self._on_deadline, call)

    def _settled_later(self, call: Call, error: BaseException) -> None:
        # Never settle under the lock: a done-callback may call back into the pool.
        threading.Thread(target=call.reject, args=(error,), daemon=True).start()

    def _finish(self, call: Call) -> list[Call]:
        """Under the lock: take ``call`` out of flight and admit waiting calls into the room it left."""
        call.state = "done"
        extra: _Task = call.extra
        self._in_flight.discard(call)
        if extra.deadline is not None and extra.loop is not None:
            # the timer would otherwise hold the call, and its result, until the full timeout passed
            extra.loop.call_soon_threadsafe(extra.deadline.cancel)
        self._run_stats.durations.append(time.monotonic() - extra.sent)
        admitted = []
        while self._waiting and len(self._in_flight) < self.max_queued and self._open:
            waiting = self._waiting.popleft()
            self._waiting_bytes -= len(waiting.payload)
            if self._send(waiting):
                admitted.append(waiting)
        if not self._in_flight:
            self._idle.notify_all()
        return admitted

    async def _watch(self, client: Client, call: Call, task: DaskFuture) -> None:
        """On the client's loop: turn the task's outcome into the caller's result or a pool error."""
        from distributed.scheduler import KilledWorker

        error: BaseException | None = None
        result: Any = None
        try:
            status, blob = await client.gather(task, asynchronous=True)
        except FutureCancelledError as exc:  # released by us (the caller has its answer), or the connection went
            error = PoolUnavailable(f"{call.name} was dropped by the Dask cluster ({exc.reason}): "
                                    f"{self._unreachable_message()}")
        except KilledWorker as exc:
            error = WorkerCrashed(
                f"the Dask worker {exc.last_worker.address if exc.last_worker else '?'} running {call.name} "
                f"died (the scheduler gave up after allowed-failures={exc.allowed_failures} retries)"
            )
            log.warning("%s", error)
        except (OSError, asyncio.CancelledError) as exc:
            error = PoolUnavailable(f"{call.name} was lost with the connection: {self._unreachable_message()}: {exc!r}")
        except Exception as exc:  # noqa: BLE001 - any other cluster failure belongs to this call
            error = WorkerCrashed(f"the Dask cluster failed {call.name}: {exc!r}")
            error.__cause__ = exc
        else:
            if status == wire.OK:
                error, result = decode_result(blob)
            else:
                error = decode_error(blob)
        with self._lock:
            if call.state != "submitted":
                return  # timed out, cancelled or closed: the caller already has its answer
            admitted = self._finish(call)
            if error is None:
                self._counts["completed"] += 1
            elif isinstance(error, WorkerCrashed):
                self._counts["crashed"] += 1
            elif not isinstance(error, PoolUnavailable):
                self._counts["failed"] += 1
        _release(call)
        _notify(admitted)
        if error is None:
            call.resolve(result)
        else:
            call.reject(error)

    def _on_deadline(self, call: Call) -> None:
        """On the client's loop: the call overran its timeout; release its task (it cannot be killed)."""
        with self._lock:
            if call.state != "submitted":
                return
            admitted = self._finish(call)
            self._counts["timeouts"] += 1
        _release(call)
        _notify(admitted)
        call.reject(TimeoutError(
            f"{call.name} did not finish within {call.timeout}s; on the Dask cluster a running task cannot be "
            "killed: it runs to completion on its worker and its result is dropped"
        ))

    def cancel(self, call: Call) -> None:
        """The caller cancelled: drop a waiting call, or release its Dask task (queued: never runs)."""
        admitted: list[Call] = []
        with self._lock:
            if call.state == "waiting":
                self._waiting.remove(call)
                self._waiting_bytes -= len(call.payload)
                call.state = "done"
            elif call.state == "submitted":
                admitted = self._finish(call)
            else:
                return
            self._counts["cancelled"] += 1
        _release(call)
        _notify(admitted)

    # ------------------------------------------------------------------ health

    def _health(self) -> str:
        client = self._client
        if client is None or client.status != "running":
            return "scheduler unreachable"
        if self._cluster["n_workers"] == 0:
            return "no workers"
        return "ok"

    def _unreachable_message(self) -> str:
        status = self._client.status if self._client is not None else "closed"
        return f"the Dask scheduler at {self.address} is unreachable (client {status})"

    def stats(self) -> dict[str, Any]:
        """The fields of PoolStats this backend knows, without waiting on the network."""
        with self._lock:
            threads = self._cluster["total_threads"]
            in_flight = len(self._in_flight)
            busy = min(in_flight, threads)
            return {
                "workers": self._cluster["n_workers"],
                "alive": self._cluster["n_workers"] if self._client is not None and self._client.status == "running" else 0,
                "busy": busy,
                "queued": in_flight - busy,
                "waiting": len(self._waiting),
                "run_time_ms": self._run_stats.run_time_ms(),
                "health": self._health(),
                **self._counts,
            }


def _release(call: Call) -> None:
    """Drop our reference to the Dask task (non-blocking): a queued task is forgotten, a running one's result dropped."""
    extra: _Task | None = call.extra
    task = None
    if extra is not None:
        task, extra.task = extra.task, None
    if task is not None:
        try:
            task.release()
        except Exception:  # noqa: BLE001 - the client is closing; the scheduler forgets it anyway
            log.debug("could not release %s", task.key, exc_info=True)


def _notify(admitted: list[Call]) -> None:
    """Outside the lock: tell the callers whose waiting calls were just handed to the cluster."""
    for call in admitted:
        call.notify_start()
