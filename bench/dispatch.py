"""Tiny-task dispatch: ``SharedPool.run`` vs a bare stdlib ``ProcessPoolExecutor``.

Both pools have the same worker count and start method (forkserver) and are
alive at the same time; each repeat times one after the other, alternating
which goes first. ``noop`` does no work, so the time per task is the dispatch
overhead: pickling, the pipe round trip, the hand-off to the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import time
from typing import Any

from bridge import SharedPool, cpu_budget

from .kernels import noop
from .report import median, report

NAME = "dispatch"
N_PIPELINED = 2000
N_SEQUENTIAL = 300
REPEATS = 3


async def _pipelined_ours(pool: SharedPool, n: int) -> float:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(pool.run(noop, i) for i in range(n)))
    elapsed = time.perf_counter() - t0
    assert results == list(range(n))
    return elapsed


async def _pipelined_stdlib(ex: concurrent.futures.Executor, n: int) -> float:
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    results = await asyncio.gather(*(loop.run_in_executor(ex, noop, i) for i in range(n)))
    elapsed = time.perf_counter() - t0
    assert results == list(range(n))
    return elapsed


async def _sequential_ours(pool: SharedPool, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        assert await pool.run(noop, i) == i
    return time.perf_counter() - t0


async def _sequential_stdlib(ex: concurrent.futures.Executor, n: int) -> float:
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    for i in range(n):
        assert await loop.run_in_executor(ex, noop, i) == i
    return time.perf_counter() - t0


async def _measure(workers: int, cpus: int, modes: list[tuple[str, int]]) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("forkserver")
    rows = []
    async with SharedPool(processes=workers, cpus=cpus, start_method="forkserver") as pool:
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
            # warm-up: start every stdlib worker (they spawn on demand) and prime both paths
            await _pipelined_ours(pool, 200)
            await _pipelined_stdlib(ex, 200)
            await _sequential_ours(pool, 50)
            await _sequential_stdlib(ex, 50)
            for mode, n in modes:
                ours_fn = _pipelined_ours if mode == "pipelined" else _sequential_ours
                std_fn = _pipelined_stdlib if mode == "pipelined" else _sequential_stdlib
                ours, std = [], []
                for rep in range(REPEATS):
                    if rep % 2 == 0:
                        ours.append(await ours_fn(pool, n))
                        std.append(await std_fn(ex, n))
                    else:
                        std.append(await std_fn(ex, n))
                        ours.append(await ours_fn(pool, n))
                us_ours = median(ours) / n * 1e6
                us_std = median(std) / n * 1e6
                rows.append({
                    "mode": mode,
                    "workers": workers,
                    "tasks": n,
                    "pool.run us/task": us_ours,
                    "stdlib us/task": us_std,
                    "ratio ours/stdlib": us_ours / us_std,
                    "pool.run tasks/s": n / median(ours),
                    "stdlib tasks/s": n / median(std),
                    "_samples_s": {"pool.run": ours, "stdlib": std},
                })
    return rows


async def _main() -> list[dict[str, Any]]:
    cpus = cpu_budget().cpus
    default_workers = max(1, cpus - 1)  # SharedPool's default sizing
    rows = await _measure(default_workers, cpus, [("pipelined", N_PIPELINED), ("one-at-a-time", N_SEQUENTIAL)])
    if cpus != default_workers:
        rows += await _measure(cpus, cpus, [("pipelined", N_PIPELINED), ("one-at-a-time", N_SEQUENTIAL)])
    return rows


def main() -> list[dict[str, Any]]:
    rows = asyncio.run(_main())
    raw = {f"{r['mode']} workers={r['workers']}": r.pop("_samples_s") for r in rows}
    report(NAME, rows, notes=[
        f"noop tasks; median of {REPEATS} repeats after warm-up; both pools use start method "
        "'forkserver' and the same worker count, and run side by side in one process",
        "stdlib = concurrent.futures.ProcessPoolExecutor via loop.run_in_executor",
        "pipelined: all tasks in flight at once via asyncio.gather; one-at-a-time: await each before the next",
        f"ratio > 1 means pool.run is slower; workers={max(1, cpu_budget().cpus - 1)} is SharedPool's default "
        "(CPU budget - 1)",
    ], raw={"samples_seconds": raw}, title="dispatch: tiny-task overhead, SharedPool.run vs ProcessPoolExecutor")
    return rows


if __name__ == "__main__":
    main()
