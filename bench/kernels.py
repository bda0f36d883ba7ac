"""Functions the benchmarks run in worker processes and threads.

They live here, in an importable module, because pool workers (forkserver or
spawn) unpickle functions by module name and never import ``__main__``.
"""

from __future__ import annotations

import time


def noop(x: int = 0) -> int:
    """The smallest task: measures dispatch overhead only."""
    return x


def spin(n: int) -> int:
    """Pure-Python CPU work that holds the GIL throughout: sum of squares mod a prime."""
    total = 0
    for i in range(n):
        total = (total + i * i) % 1_000_003
    return total


_calibrated: dict[float, int] = {}


def iterations_for(seconds: float) -> int:
    """How many ``spin`` iterations take about ``seconds`` on this machine (measured once here)."""
    if seconds in _calibrated:
        return _calibrated[seconds]
    n = 20_000
    while True:
        t0 = time.perf_counter()
        spin(n)
        elapsed = time.perf_counter() - t0
        if elapsed >= 0.05:
            break
        n *= 2
    # best of three at the probe size, to keep a busy moment from shrinking the work
    best = min(_timed(n) for _ in range(3))
    result = max(1, int(n * seconds / best))
    _calibrated[seconds] = result
    return result


def _timed(n: int) -> float:
    t0 = time.perf_counter()
    spin(n)
    return time.perf_counter() - t0


def spin_timed(n: int) -> tuple[float, float]:
    """``spin(n)``; returns (wall seconds, CPU seconds of this thread) spent inside the worker."""
    w0, c0 = time.perf_counter(), time.thread_time()
    spin(n)
    return time.perf_counter() - w0, time.thread_time() - c0
