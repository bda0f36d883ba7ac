"""The code that runs inside a pool worker process.

Kept small so a worker imports little before its caps are in place: the
environment caps native thread pools and the memory ceiling is set before the
initializer and its modules are unpickled.

A worker reads frames (:mod:`bridge.pool.wire`) from its own pipe, never a
channel shared with other workers, so a worker killed mid-message cannot wedge
the others. The parent may keep several calls in the pipe (prefetch); the
worker runs them strictly in order, one at a time, and before starting each it
reads whatever else has arrived, so a ``CANCEL`` for a prefetched call lands
before that call would start and it is skipped, costing no worker. Even a call
that cannot be unpickled here fails by its own id, which travels in the frame
header.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import threading
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from ..heap import freeze_startup_heap
from . import wire
from .memory import apply_memory_limit

#: Environment variables that cap the thread pools of native libraries
#: (OpenMP, OpenBLAS, MKL, Accelerate, numexpr, BLIS). They must be set before
#: the library is loaded, which is why the worker sets them first thing.
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "BLIS_NUM_THREADS",
)
WORKER_THREADS_ENV = "CUTOVER_WORKER_THREADS"


def worker_threads() -> int:
    """How many threads native code may use in this process.

    Inside a pool worker this is the pool's per-worker cap (budget // workers),
    so ``workers x threads`` never exceeds the CPU budget. Pass it to libraries
    that take a thread count rather than reading the environment, such as
    onnxruntime (``SessionOptions.intra_op_num_threads``) or ``cv2.setNumThreads``.
    Outside a worker it is 1 unless ``CUTOVER_WORKER_THREADS`` says otherwise.
    """
    try:
        return max(1, int(os.environ.get(WORKER_THREADS_ENV, "1")))
    except ValueError:
        return 1


def cap_threads(threads: int) -> None:
    """Set the native thread caps in the environment (before libraries load)."""
    text = str(threads)
    os.environ[WORKER_THREADS_ENV] = text
    for name in THREAD_ENV_VARS:
        os.environ[name] = text


def error_blob(exc: BaseException) -> bytes:
    """Pickled ``(exception, traceback text)``; a stand-in RemoteError if the exception cannot cross."""
    tb = "".join(traceback.format_exception(exc))
    try:
        blob = pickle.dumps((exc, tb), protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(blob)  # an exception that pickles but cannot unpickle would break the parent
    except Exception:
        from bridge.errors import RemoteError

        stand_in = RemoteError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
        blob = pickle.dumps((stand_in, tb), protocol=pickle.HIGHEST_PROTOCOL)
    return blob


def run_payload(payload: bytes | bytearray | memoryview, buffers: list[bytes] | None = None,
                raw_bytes: bool = False) -> tuple[int, bytes]:
    """Run one pickled ``(fn, args, kwargs)`` (with its out-of-band ``buffers``): ``(OK, pickled result)``,
    ``(ERROR, error_blob)``, or ``(ERROR_EXIT, error_blob)`` when it ran out of memory (the process
    should not go on). With ``raw_bytes``, a large ``bytes`` result comes back as ``(OK_BYTES, result)``."""
    fn: Any = None
    try:
        fn, args, kwargs = pickle.loads(payload, buffers=buffers)
        if type(fn) is bytes:  # a function's kept pickle (bridge.pool.protocol.encode_call)
            fn = _function(fn)
        result = fn(*args, **kwargs)
    except MemoryError as exc:
        return wire.ERROR_EXIT, error_blob(exc)
    except BaseException as exc:  # noqa: BLE001 - every failure belongs to its call
        return wire.ERROR, error_blob(exc)
    if raw_bytes and type(result) is bytes and len(result) >= wire.BIG:
        return wire.OK_BYTES, result  # pickling it would cost twenty times this copy-free hand-back
    try:
        return wire.OK, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except MemoryError as exc:
        return wire.ERROR_EXIT, error_blob(exc)
    except Exception as exc:
        from bridge.errors import SerializationError

        name = getattr(fn, "__qualname__", None) or repr(fn)
        return wire.ERROR, error_blob(SerializationError(f"the result of {name} cannot be pickled: {exc}"))


_functions: dict[bytes, Any] = {}
_FUNCTIONS_KEPT = 1024


def _function(ref: bytes) -> Any:
    """The function a kept pickle names, unpickled once per worker (finding it by name costs more
    than a tiny call)."""
    fn = _functions.get(ref)
    if fn is None:
        fn = pickle.loads(ref)
        if len(_functions) >= _FUNCTIONS_KEPT:
            _functions.clear()
        _functions[ref] = fn
    return fn


def _die_with_parent(lifeline: Connection) -> None:
    """Exit as soon as the parent's end of the lifeline closes, even mid-call."""
    try:
        lifeline.recv_bytes()
    except (EOFError, OSError):
        pass
    os._exit(70)


class _Inbox:
    """The calls in this worker's pipe, read ahead so cancels are seen before their call starts."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.reader = wire.FrameReader()
        self.pending: deque[wire.Frame] = deque()
        self.ids: set[int] = set()
        self.cancelled: set[int] = set()
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    def fill(self, block: bool) -> bool:
        """Read everything available (waiting for something if ``block``); False at end of file."""
        while True:
            if self.pending and not self.poller.poll(0):
                return True  # nothing more has arrived: no exception raised per call to find that out
            try:
                frames = self.reader.read(self.fd)
            except BlockingIOError:
                if block and not self.pending:
                    self.poller.poll()
                    continue
                return True
            if frames is None:
                return False
            for frame in frames:
                call_id, kind = frame[0], frame[1]
                if kind == wire.CANCEL:
                    if call_id in self.ids:
                        self.cancelled.add(call_id)
                else:
                    self.ids.add(call_id)
                    self.pending.append(frame)


def _send(fd: int, call_id: int, kind: int, body: bytes = b"", ran: float = 0.0) -> None:
    head = _HEADER_PACK(len(body), call_id, kind, ran)
    if len(body) < 65536:  # one small buffer, one write; a large result is never copied into a frame
        frame = head + body
        try:
            written = os.write(fd, frame)
        except BlockingIOError:
            written = 0
        if written < len(frame):
            wire.write_all(fd, (memoryview(frame)[written:],))
        return
    wire.write_all(fd, (head, body))


_HEADER_PACK = wire.HEADER.pack
_clock = time.perf_counter


def worker_main(conn: Connection, lifeline: Connection, init_blob: bytes, threads: int,
                memory_limit: int | None = None) -> None:
    """Entry point of a worker process: cap threads and memory, initialise, then serve calls."""
    cap_threads(threads)
    # Ctrl-C reaches the whole process group; the parent decides how to shut down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_die_with_parent, args=(lifeline,), daemon=True, name="lifeline").start()
    fd = conn.fileno()
    os.set_blocking(fd, True)
    try:
        apply_memory_limit(memory_limit)
        initializer, initargs = pickle.loads(init_blob)
        if initializer is not None:
            initializer(*initargs)
        # Libraries loaded before the env caps (a forkserver preload) are capped here.
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
        freeze_startup_heap()  # the models stay for the worker's life: full collections inside calls skip them
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, then exit
        text = "".join(traceback.format_exception(exc)).encode()
        wire.write_all(fd, [wire.header(0, wire.INIT_FAILED, len(text)), text])
        return
    wire.write_all(fd, [wire.header(os.getpid(), wire.READY)])
    os.set_blocking(fd, False)
    _serve(_Inbox(fd))


def _serve(inbox: _Inbox) -> None:
    fd = inbox.fd
    while True:
        if not inbox.fill(block=True):
            return
        call_id, kind, body, _ = inbox.pending.popleft()
        inbox.ids.discard(call_id)
        if kind == wire.EXIT:
            return
        if call_id in inbox.cancelled:
            inbox.cancelled.discard(call_id)
            _send(fd, call_id, wire.SKIPPED)
            continue
        began = _clock()
        if kind == wire.CALL_BUFFERS:
            pickled, buffers = wire.split_buffers(body)
            status, blob = run_payload(pickled, buffers, raw_bytes=True)
            del pickled, buffers
        else:
            status, blob = run_payload(body, raw_bytes=True)
        del body
        _send(fd, call_id, status, blob, _clock() - began)
        if status == wire.ERROR_EXIT:
            return  # out of memory, the heap may be in a bad state: a fresh worker takes over
