"""Functions the tests send to pool workers: they must live in an importable module."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any


def square(x: int) -> int:
    return x * x


def add(a: int, b: int, *, scale: int = 1) -> int:
    return (a + b) * scale


def getpid() -> int:
    return os.getpid()


def fail_with(message: str) -> None:
    raise LookupError(message)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def return_unpicklable() -> Any:
    return threading.Lock()


def touch(path: str) -> str:
    Path(path).write_text(str(os.getpid()))
    return path


def wait_at_gate(started: str, gate: str, value: Any = None) -> Any:
    """Announce our pid on the ``started`` FIFO, then block until the test opens ``gate``."""
    with open(started, "w") as fifo:
        fifo.write(str(os.getpid()))
    with open(gate) as fifo:
        fifo.read()
    return value


def thread_caps() -> dict[str, Any]:
    import numpy  # noqa: F401 - loads OpenBLAS (or MKL) so its thread pool is visible
    from threadpoolctl import threadpool_info

    import bridge

    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CUTOVER_WORKER_THREADS")
    return {
        "env": {name: os.environ.get(name) for name in names},
        "worker_threads": bridge.worker_threads(),
        "native": [lib["num_threads"] for lib in threadpool_info()],
    }


def record_init(directory: str) -> None:
    """A pool initializer that leaves one file per worker start."""
    Path(directory, f"init-{os.getpid()}").write_text("loaded")


def failing_init() -> None:
    raise RuntimeError("model file missing: /models/face.onnx")



def ocr_engine_loads() -> tuple[int, int]:
    """(pid, how many times this worker built the OCR engine)."""
    from workloads import engine_loads

    return os.getpid(), engine_loads()
