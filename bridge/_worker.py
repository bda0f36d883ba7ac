"""The code that runs inside a pool worker process.

Kept apart from :mod:`bridge.pool` so a worker imports as little as possible
before its thread caps are in place: the initializer and its modules are
unpickled only after the environment limits native thread pools.

Wire protocol on the worker's own pipe (no lock shared between workers, so a
worker killed mid-message cannot wedge the others):

* worker -> parent, once: ``("ready", pid)`` or ``("init_failed", traceback)``;
* parent -> worker: the call id (8 bytes, little-endian) then a pickled
  ``(fn, args, kwargs)``, or ``b""`` to exit; the id travels outside the
  pickle so even a call that cannot be unpickled here fails by its own id;
* worker -> parent: ``(call_id, True, result, None)`` or
  ``(call_id, False, exception, formatted_traceback)``.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

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
CALL_ID_BYTES = 8


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


def _die_with_parent(lifeline: Connection) -> None:
    """Exit as soon as the parent's end of the lifeline closes, even mid-call."""
    try:
        lifeline.recv_bytes()
    except (EOFError, OSError):
        pass
    os._exit(70)


def _send(conn: Connection, message: tuple[Any, ...]) -> None:
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _reply_error(conn: Connection, call_id: int, exc: BaseException) -> None:
    tb = "".join(traceback.format_exception(exc))
    try:
        blob = pickle.dumps((call_id, False, exc, tb), protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(blob)  # an exception that pickles but cannot unpickle would break the parent
    except Exception:
        from bridge.errors import RemoteError

        stand_in = RemoteError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
        blob = pickle.dumps((call_id, False, stand_in, tb), protocol=pickle.HIGHEST_PROTOCOL)
    conn.send_bytes(blob)


def worker_main(conn: Connection, lifeline: Connection, init_blob: bytes, threads: int) -> None:
    """Entry point of a worker process: cap threads, initialise, then serve calls."""
    threads_text = str(threads)
    os.environ[WORKER_THREADS_ENV] = threads_text
    for name in THREAD_ENV_VARS:
        os.environ[name] = threads_text
    # Ctrl-C reaches the whole process group; the parent decides how to shut down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_die_with_parent, args=(lifeline,), daemon=True, name="lifeline").start()

    try:
        initializer, initargs = pickle.loads(init_blob)
        if initializer is not None:
            initializer(*initargs)
        # Libraries loaded before the env caps (a forkserver preload) are capped here.
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, then exit
        _send(conn, ("init_failed", "".join(traceback.format_exception(exc))))
        return
    _send(conn, ("ready", os.getpid()))

    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not message:
            return
        call_id = int.from_bytes(message[:CALL_ID_BYTES], "little")
        fn: Any = None
        try:
            fn, args, kwargs = pickle.loads(message[CALL_ID_BYTES:])
            result = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - every failure belongs to its call
            _reply_error(conn, call_id, exc)
            continue
        try:
            blob = pickle.dumps((call_id, True, result, None), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            from bridge.errors import SerializationError

            error = SerializationError(f"the result of {_name(fn)} cannot be pickled: {exc}")
            _reply_error(conn, call_id, error)
            continue
        conn.send_bytes(blob)


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
