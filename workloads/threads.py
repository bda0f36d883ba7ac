"""How many native threads a kernel may use, read from the environment.

The pool sets ``CUTOVER_WORKER_THREADS`` in each worker (its share of the CPU
budget); reading it here, not via ``bridge``, keeps the kernels free of any
dependency on the serving stack.
"""

from __future__ import annotations

import os

THREADS_ENV = "CUTOVER_WORKER_THREADS"


def native_threads() -> int:
    """The thread cap for OpenCV and onnxruntime in this process: the env value, else 1."""
    try:
        return max(1, int(os.environ.get(THREADS_ENV, "1")))
    except ValueError:
        return 1
