"""Worker processes of this host, dispatched on the pool's own event loop.

Why not the standard library's ``ProcessPoolExecutor``, loky or pebble?
``ProcessPoolExecutor`` (and loky) treats one dead worker as a broken pool and
cannot stop a running call; pebble kills on timeout but shares one locked
channel between workers, which a worker killed while holding it wedges
(pebble #163, #97, #119). Here each worker has a private pipe and a process
sentinel, both watched by the loop (``add_reader``): a worker's death is an
event about that worker only.

Everything below runs on one event loop, with no lock and no thread: calls
are written from the loop (all the calls of a loop turn in one ``writev``
per worker), results settle the caller's future directly, deadlines are
``call_at`` timers.

**Prefetch.** A worker holds a call in its pipe behind the one it is running,
more while calls are short (see :meth:`LocalBackend._depth`), so it never
waits on a round trip through the parent. The depth starts at two for a worker
that was idle (it ran out of calls while none were queued) and doubles with
each answer, so a burst of long calls after a
stream of short ones is not stacked on a few workers before its first answer
says how long they take. A worker runs its calls in
order, so:

* the call at the head of a worker's list *started* when it was written to an
  idle worker, or when the result before it arrived; its timeout clock and its
  ``on_start`` hook start then;
* when a worker dies, its head call (if started) fails with
  :class:`~bridge.errors.WorkerCrashed`, and the calls behind it never started:
  they go back to the front of the queue and run elsewhere, exactly once. (A
  worker being killed for a timeout or a cancel that still answers its call
  has started the next one: that one fails with the crash, never runs twice);
* cancelling a prefetched call marks it and sends the worker a ``CANCEL``
  frame, which the worker reads before it would start the call: it is skipped,
  and no worker is killed. Cancelling a started call kills its worker, the
  only way to stop native code mid-call.

A call's states::

    waiting -> queued -> sent (prefetched) -> running -> done
                  ^________/ (its worker died first)
    cancel(): waiting/queued -> done; sent -> cancelled (skipped); running -> killing (worker killed)
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..errors import PoolBusy, PoolClosed, WorkerCrashed, WorkerStartupError
from ..mainguard import check_main_guard
from . import wire
from .protocol import LOOP, Call, RunStats, decode_error, decode_result, describe_exit
from .worker import worker_main

log = logging.getLogger(__name__)

_STARTING, _READY, _DEAD = "starting", "ready", "dead"
_MAX_STARTUP_DEATHS = 3
#: Unstarted payload bytes a worker's pipe may hold: large calls are not stacked behind each other.
PREFETCH_BYTES = 1 << 18
#: Prefetch as many calls as recent run times say fit in this window (at least 1 behind the running one).
PREFETCH_WINDOW = 0.002
#: A deep pipe is topped up once this many of its calls are answered (or half of them, if fewer).
REFILL = 8
_EXIT_GRACE = 5.0
#: Seconds a cancelled running call may still answer (its result dropped) before its worker is killed.
DEFAULT_CANCEL_GRACE = 0.5
_MAX_WINDOW = 1 << 10
#: Payloads under this size travel in one buffer with their header.
SMALL = 4096
_HEADER_PACK = wire.HEADER.pack
_OK = wire.OK


@dataclass(frozen=True)
class LocalConfig:
    processes: int
    worker_threads: int
    init_blob: bytes
    start_method: str
    preload: tuple[str, ...]
    startup_timeout: float
    max_queued: int
    max_waiting: int | None
    max_waiting_bytes: int | None
    memory_limit: int | None
    prefetch: int
    cancel_grace: float = DEFAULT_CANCEL_GRACE


class _Worker:
    __slots__ = ("index", "process", "conn", "fd", "lifeline", "sentinel", "pid", "state", "calls", "reader",
                 "out", "writing", "killed", "retiring", "unstarted_bytes", "exited", "window")

    def __init__(self, index: int, process: Any, conn: Any, lifeline: Any) -> None:
        self.index, self.process, self.conn, self.lifeline = index, process, conn, lifeline
        self.fd: int = conn.fileno()
        self.sentinel: int = process.sentinel
        self.pid: int | None = None
        self.state = _STARTING
        self.calls: deque[Call] = deque()  # written to this worker, not yet answered, in order
        self.reader = wire.FrameReader(wire.PARENT_CHUNK)
        self.out: list[bytes | memoryview] = []
        self.writing = False
        self.killed = False  # we killed it: its head call was already settled (timeout, cancel, close)
        self.retiring = False  # it said it exits after its last answer (out of memory)
        self.unstarted_bytes = 0
        self.exited: asyncio.Future[None] | None = None
        self.window = 2  # slow start: the calls this worker may hold, doubled per answer, reset when idle


class LocalBackend:
    """The local pool's dispatcher; every method but :meth:`stats` and :meth:`kill_now` runs on ``loop``."""

    loop_bound = True

    def __init__(self, config: LocalConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.state = "new"  # new -> running -> closing -> closed
        self.broken: WorkerStartupError | None = None
        self.run_stats = RunStats()
        self.workers: list[_Worker] = []
        self.queue: deque[Call] = deque()  # may hold calls cancelled since (state != "queued"): skipped
        self.waiting: deque[Call] = deque()  # idem
        self.n_queued = self.n_waiting = self.n_running = self.prefetched = 0
        self.waiting_bytes = 0
        self._ewma: float | None = None  # of the run times workers report: the prefetch depth's measure
        self._completed = 0  # completions of the read being settled, counted once per read
        self._pump_pending = False
        self._in_pump = False
        self._dirty: set[_Worker] = set()
        self._startup_deaths = 0
        self._durations = self.run_stats.durations
        self._counts = self.run_stats.counts
        self._ready: asyncio.Future[None] = loop.create_future()
        self._idle = asyncio.Event()
        self._closed = asyncio.Event()
        self._spawning: set[asyncio.Future[Any]] = set()
        self._ctx = multiprocessing.get_context(config.start_method)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        config = self.config
        check_main_guard(config.start_method)  # type: ignore[arg-type]
        if config.start_method == "forkserver":
            self._ctx.set_forkserver_preload(list(config.preload))
        self.state = "running"
        try:
            for index in range(config.processes):
                worker = await self.loop.run_in_executor(None, self._spawn, index)
                if self.state != "running":
                    self._kill_unattached(worker)
                    break
                self._attach(worker)
        except Exception as exc:
            self._fail_all(WorkerStartupError(f"could not start a worker process: {exc}"))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), config.startup_timeout)
        except BaseException as exc:
            await self.close(0.0)
            if isinstance(exc, TimeoutError):
                raise WorkerStartupError(f"pool workers were not ready within {config.startup_timeout}s") from None
            raise

    def _spawn(self, index: int) -> _Worker:
        """Start one worker process (blocking: it runs in an executor thread)."""
        config = self.config
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        life_r, life_w = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=worker_main,
            args=(child_conn, life_r, config.init_blob, config.worker_threads, config.memory_limit),
            name=f"cutover-worker-{index}",
            daemon=True,
        )
        try:
            process.start()
        finally:
            child_conn.close()
            life_r.close()
        return _Worker(index, process, parent_conn, life_w)

    def _attach(self, worker: _Worker) -> None:
        os.set_blocking(worker.fd, False)
        worker.exited = self.loop.create_future()
        self.loop.add_reader(worker.fd, self._on_readable, worker)
        self.loop.add_reader(worker.sentinel, self._on_exit, worker)
        for position, old in enumerate(self.workers):
            if old.index == worker.index:
                self.workers[position] = worker
                return
        self.workers.append(worker)

    def _kill_unattached(self, worker: _Worker) -> None:
        worker.process.kill()
        worker.process.join()
        worker.conn.close()
        worker.lifeline.close()
        worker.process.close()

    async def close(self, timeout: float) -> None:
        """Stop accepting calls; let accepted ones finish for ``timeout`` seconds; fail the rest; reap."""
        if self.state == "new":
            self.state = "closed"
            return
        if self.state != "running":
            await self._closed.wait()
            return
        self.state = "closing"
        waiting = self._take_waiting()
        if not self._ready.done():
            self._ready.set_exception(PoolClosed("the pool closed while starting"))
            self._ready.exception()  # retrieved: start() reports it
        for call in waiting:
            call.reject(PoolClosed("the pool closed before this call could be queued"))
        self._check_idle()
        if not self._idle.is_set() and self.broken is None:
            try:
                await asyncio.wait_for(self._idle.wait(), max(0.0, timeout))
            except TimeoutError:
                pass
        self._fail_leftovers()
        await self._shutdown_workers()
        self.state = "closed"
        self._closed.set()

    def _fail_leftovers(self) -> None:
        doomed: list[tuple[Call, BaseException]] = []
        for worker in self.workers:
            for call in worker.calls:
                if call.state in ("running", "killing"):
                    if call.state == "running":
                        doomed.append((call, PoolClosed(
                            "the pool closed before this call finished; its worker was killed")))
                    self._end(call)
                    self._kill(worker)
                elif call.state == "sent":
                    call.state = "done"
                    doomed.append((call, PoolClosed("the pool closed before this call started")))
            worker.calls.clear()
        self.prefetched = 0
        for call in self._take_queue():
            doomed.append((call, PoolClosed("the pool closed before this call started")))
        for call, error in doomed:
            call.reject(error)

    async def _shutdown_workers(self) -> None:
        for spawning in list(self._spawning):
            await asyncio.gather(spawning, return_exceptions=True)
        live = [w for w in self.workers if w.state != _DEAD]
        for worker in live:
            worker.out.append(wire.header(0, wire.EXIT))
            self._flush(worker)
        pending = [w.exited for w in live if w.exited is not None]
        if pending:
            _, late = await asyncio.wait(pending, timeout=_EXIT_GRACE)
            if late:
                for worker in live:
                    if worker.state != _DEAD:
                        self._kill(worker)
                await asyncio.wait(late)

    def kill_now(self) -> None:
        """Kill and reap every worker without the loop (its loop is gone: interpreter exit)."""
        self.state = "closed"
        for worker in self.workers:
            if worker.state == _DEAD:
                continue
            worker.state = _DEAD
            try:
                worker.process.kill()
                worker.process.join()
            except (OSError, ValueError, AssertionError):
                pass
            for closing in (worker.conn, worker.lifeline):
                try:
                    closing.close()
                except OSError:
                    pass

    # ------------------------------------------------------------------ calling (on the loop)

    def submit(self, call: Call, block: bool) -> None:
        if self.state != "running":
            raise PoolClosed(f"the pool is {self.state}")
        if self.broken is not None:
            raise self.broken
        config = self.config
        if self.n_queued + self.prefetched < config.max_queued and not self.n_waiting:
            call.state = "queued"
            self.queue.append(call)
            self.n_queued += 1
            if not self._pump_pending and not self._in_pump and self._an_idle_worker():
                self._pump()  # an idle worker gets it now; the rest of this loop turn's calls go in one write
            else:
                self._schedule_pump()
            return
        size = call.size
        if block and self._has_room_to_wait(size):
            call.state = "waiting"
            self.waiting.append(call)
            self.n_waiting += 1
            self.waiting_bytes += size
            return
        more = f", {self.n_waiting} more for room" if block else ""
        raise PoolBusy(
            f"the pool queue is full ({config.max_queued} calls waiting for {config.processes} workers{more}); "
            "retry later"
        )

    def _has_room_to_wait(self, size: int) -> bool:
        config = self.config
        if config.max_waiting is not None and self.n_waiting >= config.max_waiting:
            return False
        limit = config.max_waiting_bytes
        return limit is None or not self.n_waiting or self.waiting_bytes + size <= limit

    def cancel(self, call: Call) -> None:
        state = call.state
        if state == "waiting":
            self.n_waiting -= 1
            self.waiting_bytes -= call.size
        elif state == "queued":
            self.n_queued -= 1
        elif state == "sent":
            worker = call.worker
            call.state = "cancelled"  # stays in its worker's list until the worker skips it
            self.prefetched -= 1
            worker.unstarted_bytes -= call.size
            worker.out.append(wire.header(call.id, wire.CANCEL))
            self._flush(worker)  # now, not at the next pump: the worker may be about to start it
        elif state == "running":
            call.state = "killing"
            if call.timer is not None:
                call.timer.cancel()
            # Killed only if it runs on: a replacement loads the initializer again (the models: seconds), and a
            # client that hangs up on a call about to answer must not cost that. Its answer ends the timer.
            if self.config.cancel_grace > 0:
                call.timer = self.loop.call_later(self.config.cancel_grace, self._kill, call.worker)
            else:
                call.timer = None
                self._kill(call.worker)
        else:
            return  # done, already cancelled or being killed
        if state in ("waiting", "queued"):
            call.state = "done"
        call.payload, call.buffers = b"", ()
        self.run_stats.counts["cancelled"] += 1
        self._schedule_pump()

    # ------------------------------------------------------------------ dispatch

    def _schedule_pump(self) -> None:
        if not self._pump_pending:
            self._pump_pending = True
            self.loop.call_soon(self._pump)

    def _depth(self) -> int:
        """Calls a worker may hold: the running one and one behind it, more while recent calls were short.

        "Short" is what the workers measured (each answer carries its call's run time). A time taken
        across the pipe would count a busy machine's scheduling delays as run time: the depth would
        shrink just when a worker most needs calls in its pipe to outlast its parent's absences."""
        limit = self.config.prefetch
        ewma = self._ewma
        if limit <= 2 or ewma is None:
            return min(2, limit)
        return max(2, min(limit, int(PREFETCH_WINDOW / max(ewma, 1e-7))))

    def _an_idle_worker(self) -> bool:
        return any(w.state == _READY and not w.calls and not w.killed and not w.retiring for w in self.workers)

    def _pump(self) -> None:
        """Hand queued calls to workers with room, admit waiting calls into the room left, write it all."""
        self._pump_pending = False
        self._in_pump = True
        try:
            if self.state in ("running", "closing") and self.broken is None:
                while True:
                    if self.n_queued:
                        self._dispatch()
                    if not self._admit_waiting():
                        break
            for worker in list(self._dirty):
                self._flush(worker)
            self._dirty.clear()
            self._check_idle()
        finally:
            self._in_pump = False

    def _dispatch(self) -> None:
        depth = self._depth()
        # Refill a worker only once it is down to half its depth, or REFILL calls below it if that comes
        # first: one write then carries several calls (a write that wakes a sleeping worker is the dearest
        # part of a tiny call), never one per answer; and the answers of one read, all settled in one loop
        # turn, stay few enough not to hold the loop while the worker still has plenty in its pipe.
        low = max(depth // 2, depth - REFILL)
        ready = [w for w in self.workers
                 if w.state == _READY and not w.killed and not w.retiring and len(w.calls) <= low]
        if not ready:
            return
        queue = self.queue
        budget = PREFETCH_BYTES
        only = ready[0] if len(ready) == 1 else None
        while queue:
            worker = only or min(ready, key=_load)
            held = len(worker.calls)
            if held >= depth or held >= worker.window or (held and worker.unstarted_bytes >= budget):
                return
            call = queue.popleft()
            if call.state != "queued":
                continue  # cancelled while queued
            self.n_queued -= 1
            self._send(worker, call)

    def _send(self, worker: _Worker, call: Call) -> None:
        payload = call.payload
        size = call.size
        if call.buffers:  # large arguments out of band: each written from its own memory
            head = wire.buffers_head(call.buffers)
            worker.out.append(_HEADER_PACK(len(head) + size, call.id, wire.CALL_BUFFERS, 0.0) + head)
            worker.out.append(payload)
            worker.out.extend(call.buffers)
        elif size < SMALL:  # one small buffer beats two iovecs; a large payload is never copied
            worker.out.append(_HEADER_PACK(size, call.id, wire.CALL, 0.0) + payload)
        else:
            worker.out.append(_HEADER_PACK(size, call.id, wire.CALL, 0.0))
            worker.out.append(payload)
        self._dirty.add(worker)
        call.worker = worker
        worker.calls.append(call)
        if len(worker.calls) == 1:
            self._begin(worker, call, self.loop.time())
        else:
            call.state = "sent"
            self.prefetched += 1
            worker.unstarted_bytes += size

    def _begin(self, worker: _Worker, call: Call, now: float) -> None:
        """The worker starts ``call`` now: the clock and the caller's ``on_start`` start here."""
        if call.state == "sent":
            self.prefetched -= 1
            worker.unstarted_bytes -= call.size
        call.state = "running"
        call.started = now
        call.payload, call.buffers = b"", ()  # a started call is never sent again
        self.n_running += 1
        if call.timeout is not None:
            call.timer = self.loop.call_at(now + call.timeout, self._on_deadline, worker, call)
        if call.on_start is not None:
            call.notify_start()

    def _end(self, call: Call) -> None:
        if call.state in ("running", "killing"):
            self.n_running -= 1
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        call.state = "done"

    def _admit_waiting(self) -> bool:
        admitted = False
        max_queued = self.config.max_queued
        while self.n_waiting and self.n_queued + self.prefetched < max_queued:
            call = self.waiting.popleft()
            if call.state != "waiting":
                continue
            self.n_waiting -= 1
            self.waiting_bytes -= call.size
            call.state = "queued"
            self.queue.append(call)
            self.n_queued += 1
            admitted = True
        return admitted

    def _flush(self, worker: _Worker) -> None:
        parts = worker.out
        if worker.state == _DEAD:
            parts.clear()
            return
        while parts:
            batch = parts[:wire.IOV_MAX]
            try:
                written = os.writev(worker.fd, batch)
            except BlockingIOError:
                break
            except OSError:
                parts.clear()  # the worker is gone; its sentinel reports it
                break
            if written == sum(map(len, batch)):
                del parts[:len(batch)]
                continue
            done = 0
            for part in batch:
                size = len(part)
                if written < size:
                    break
                written -= size
                done += 1
            del parts[:done]
            if written:
                parts[0] = memoryview(parts[0])[written:]
        if parts and not worker.writing:
            worker.writing = True
            self.loop.add_writer(worker.fd, self._flush, worker)
        elif not parts and worker.writing:
            worker.writing = False
            self.loop.remove_writer(worker.fd)

    # ------------------------------------------------------------------ events from workers

    def _on_readable(self, worker: _Worker) -> None:
        try:
            frames = worker.reader.read(worker.fd)
        except BlockingIOError:
            return
        except OSError:
            frames = None
        if frames is None:  # end of file: the worker is exiting; its sentinel reports the exit
            self.loop.remove_reader(worker.fd)
            if not worker.retiring and worker.state != _DEAD and self.state == "running":
                self._kill(worker)  # a broken pipe with a live process: finish it
            return
        self._on_frames(worker, frames, self.loop.time())

    def _on_frames(self, worker: _Worker, frames: list[wire.Frame], now: float) -> None:
        """Settle what one read brought. The hot path, inlined: a result for the running call at the head
        of the worker's list (the general path, :meth:`_on_frame`, handles every other case)."""
        calls = worker.calls
        durations = self._durations
        for call_id, kind, body, ran in frames:
            if kind == _OK and calls:
                call = calls[0]
                if call.id == call_id and call.state == "running":
                    try:
                        value = pickle.loads(body)  # our own worker's answer, over its private pipe
                    except Exception:  # noqa: BLE001 - the general path reports it
                        pass
                    else:
                        calls.popleft()
                        durations.append(ran)
                        ewma = self._ewma
                        self._ewma = ran if ewma is None else 0.8 * ewma + 0.2 * ran
                        self._completed += 1
                        self.n_running -= 1
                        if call.timer is not None:
                            call.timer.cancel()
                            call.timer = None
                        call.state = "done"
                        if calls:
                            worker.window = min(worker.window * 2, _MAX_WINDOW)
                            head = calls[0]
                            if head.state == "sent":  # it started, even on a worker we are killing
                                self._begin(worker, head, now)
                        elif self.n_queued:  # it drained only because the parent was slower: not idle
                            worker.window = min(worker.window * 2, _MAX_WINDOW)
                        else:
                            worker.window = 2
                        if call.kind == LOOP:
                            target = call.target
                            if not target.done():
                                target.set_result(value)
                        else:
                            call.resolve(value)
                        continue
            self._on_frame(worker, call_id, kind, body, ran, now)
        if self._completed:
            self._counts["completed"] += self._completed
            self._completed = 0
        if not self._pump_pending:
            self._pump_pending = True
            self.loop.call_soon(self._pump)

    def _on_frame(self, worker: _Worker, call_id: int, kind: int, body: bytes | bytearray, ran: float,
                  now: float) -> None:
        calls = worker.calls
        if kind == wire.READY:
            worker.pid = call_id  # a READY frame carries the worker's pid in its id field
            worker.state = _READY
            self._startup_deaths = 0
            if not self._ready.done() and not any(w.state == _STARTING for w in self.workers):
                self._ready.set_result(None)
            self._schedule_pump()
            return
        if kind == wire.INIT_FAILED:
            self._kill(worker)
            text = bytes(body).decode(errors="replace")
            self._fail_all(WorkerStartupError(f"the pool initializer failed in a worker:\n{text}"))
            return
        if not calls or calls[0].id != call_id:
            log.error("worker %s answered call %s out of order; replacing it", worker.pid, call_id)
            self._kill(worker)
            return
        call = calls.popleft()
        outcome: tuple[BaseException | None, Any] | None = None
        if call.state == "running":
            self.run_stats.durations.append(ran)
            self._ewma = ran if self._ewma is None else 0.8 * self._ewma + 0.2 * ran
            if kind == wire.OK:
                outcome = decode_result(body)
            elif kind == wire.OK_BYTES:
                outcome = (None, body if type(body) is bytes else bytes(body))
            else:
                outcome = (decode_error(body), None)
            self.run_stats.counts["completed" if outcome[0] is None else "failed"] += 1
            self._end(call)
        elif call.state == "killing":
            self._end(call)  # answered before the kill landed; the caller is gone
        elif call.state == "cancelled":
            call.state = "done"  # skipped (or run anyway, if the cancel came too late): nobody waits for it
        if kind == wire.ERROR_EXIT:
            worker.retiring = True  # it exits now: what it holds never starts
            self._requeue(worker)
        elif calls and calls[0].state == "sent":  # it started, even on a worker we are killing
            self._begin(worker, calls[0], now)
        if not calls and not self.n_queued:  # idle, with nothing queued: the next burst starts slow
            worker.window = 2
        self._schedule_pump()
        if outcome is not None:
            error, value = outcome
            if error is None:
                call.resolve(value)
            else:
                call.reject(error)

    def _requeue(self, worker: _Worker) -> None:
        """Put the calls behind a worker's last started one back at the front of the queue, in order."""
        back = []
        for call in worker.calls:
            if call.state == "sent":
                self.prefetched -= 1
                call.state = "queued"
                back.append(call)
            elif call.state == "cancelled":
                call.state = "done"
        worker.calls.clear()
        worker.unstarted_bytes = 0
        self.queue.extendleft(reversed(back))
        self.n_queued += len(back)

    def _on_exit(self, worker: _Worker) -> None:
        """The worker process exited: settle its started call, requeue the rest, start a replacement."""
        if worker.state == _DEAD:
            return
        self._drain(worker)
        was_starting = worker.state == _STARTING
        worker.process.join()
        exitcode = worker.process.exitcode
        crashed: Call | None = None
        head = worker.calls[0] if worker.calls else None
        if head is not None and head.state in ("running", "killing"):
            worker.calls.popleft()
            if head.state == "running":
                crashed = head
                self.run_stats.counts["crashed"] += 1
            self._end(head)
        self._requeue(worker)
        self._retire(worker)
        if was_starting and not worker.killed:
            self._startup_deaths += 1
        give_up = self._startup_deaths >= _MAX_STARTUP_DEATHS
        if give_up:
            self._fail_all(WorkerStartupError(
                f"{self._startup_deaths} workers in a row died while starting ({describe_exit(exitcode)})"
            ))
        elif self.state == "running" and self.broken is None:
            self._replace(worker.index)
        self._schedule_pump()
        if crashed is not None:
            message = f"the worker (pid {worker.pid}) running {crashed.name} died: {describe_exit(exitcode)}"
            log.warning("%s", message)
            crashed.reject(WorkerCrashed(message, pid=worker.pid, exitcode=exitcode))

    def _drain(self, worker: _Worker) -> None:
        """Read what a dead worker wrote before it died: those answers are real."""
        while True:
            try:
                frames = worker.reader.read(worker.fd)
            except (BlockingIOError, OSError):
                return
            if frames is None:
                return
            self._on_frames(worker, frames, self.loop.time())
            if worker.state == _DEAD:
                return

    def _retire(self, worker: _Worker) -> None:
        worker.state = _DEAD
        self.loop.remove_reader(worker.sentinel)
        self.loop.remove_reader(worker.fd)
        if worker.writing:
            self.loop.remove_writer(worker.fd)
            worker.writing = False
        worker.out.clear()
        self._dirty.discard(worker)
        worker.conn.close()
        worker.lifeline.close()
        worker.process.close()
        if worker.exited is not None and not worker.exited.done():
            worker.exited.set_result(None)

    def _replace(self, index: int) -> None:
        spawning = asyncio.ensure_future(self.loop.run_in_executor(None, self._spawn, index))
        self._spawning.add(spawning)
        spawning.add_done_callback(self._on_spawned)

    def _on_spawned(self, spawning: asyncio.Future[_Worker]) -> None:
        self._spawning.discard(spawning)
        error = spawning.exception()
        if error is not None:  # out of file descriptors, forkserver gone...
            self._fail_all(WorkerStartupError(f"could not start a replacement worker: {error}"))
            return
        worker = spawning.result()
        if self.state != "running" or self.broken is not None:
            self._kill_unattached(worker)
            return
        self.run_stats.counts["restarts"] += 1
        self._attach(worker)

    def _kill(self, worker: _Worker) -> None:
        if worker.state == _DEAD:
            return
        worker.killed = True
        try:
            worker.process.kill()
        except (OSError, ValueError):
            pass

    def _on_deadline(self, worker: _Worker, call: Call) -> None:
        call.timer = None
        if call.state != "running" or call.worker is not worker:
            return
        self.run_stats.counts["timeouts"] += 1
        self._end(call)
        self._kill(worker)
        call.reject(TimeoutError(f"{call.name} did not finish within {call.timeout}s; its worker was killed and replaced"))

    def _take_waiting(self) -> list[Call]:
        taken = [call for call in self.waiting if call.state == "waiting"]
        self.waiting.clear()
        self.n_waiting = self.waiting_bytes = 0
        for call in taken:
            call.state = "done"
        return taken

    def _take_queue(self) -> list[Call]:
        taken = [call for call in self.queue if call.state == "queued"]
        self.queue.clear()
        self.n_queued = 0
        for call in taken:
            call.state = "done"
        return taken

    def _fail_all(self, error: WorkerStartupError) -> None:
        """The pool cannot serve: fail every call, report once, refuse new calls."""
        if self.broken is None:
            self.broken = error
            log.error("%s", error)
        doomed = self._take_waiting() + self._take_queue()
        for worker in self.workers:
            for call in worker.calls:
                if call.state in ("running", "sent"):
                    doomed.append(call)
                self._end(call)
            worker.calls.clear()
            worker.unstarted_bytes = 0
            self._kill(worker)
        self.prefetched = 0
        if not self._ready.done():
            self._ready.set_exception(error)
        self._check_idle()
        for call in doomed:
            call.reject(error)

    def _check_idle(self) -> None:
        if self.state == "closing" and not self.n_queued and all(not w.calls for w in self.workers):
            self._idle.set()

    # ------------------------------------------------------------------ stats (any thread)

    def stats(self) -> dict[str, Any]:
        return {
            "alive": sum(w.state == _READY for w in list(self.workers)),
            "busy": self.n_running,
            "queued": self.n_queued + self.prefetched,
            "prefetched": self.prefetched,
            "waiting": self.n_waiting,
            "health": "broken" if self.broken is not None else ("ok" if self.state == "running" else "not running"),
            "run_time_ms": self.run_stats.run_time_ms(),
            **self.run_stats.counts,
        }


def _load(worker: _Worker) -> int:
    return len(worker.calls)

