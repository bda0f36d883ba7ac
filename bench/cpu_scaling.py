"""CPU scaling: does a pure-Python kernel run ``workers`` times faster on the pool?

t1 is one task alone on the pool; then 4 x workers tasks go in at once. With
perfect scaling they take t1 * N / workers; efficiency = ideal / actual. The
same is measured side by side on a stdlib ``ProcessPoolExecutor`` with the
same worker count and start method, as the baseline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge import SharedPool, cpu_budget

from .kernels import iterations_for, spin
from .report import median, report

NAME = "cpu_scaling"
TASK_SECONDS = 0.15
REPEATS = 3


async def _timed(make: Callable[[], Awaitable[Any]]) -> float:
    t0 = time.perf_counter()
    await make()
    return time.perf_counter() - t0


async def _main() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    cpus = cpu_budget().cpus
    workers = cpus
    n_tasks = 4 * workers
    iters = iterations_for(TASK_SECONDS)
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("forkserver")

    async with SharedPool(processes=workers, cpus=cpus, start_method="forkserver") as pool:
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
            impls: dict[str, Callable[[], Awaitable[Any]]] = {
                "SharedPool.run": lambda: pool.run(spin, iters),
                "ProcessPoolExecutor": lambda: loop.run_in_executor(ex, spin, iters),
            }
            # warm-up: every worker of both pools runs the kernel once
            for make in impls.values():
                await asyncio.gather(*(make() for _ in range(workers)))

            samples: dict[str, dict[str, list[float]]] = {k: {"t1": [], "tN": []} for k in impls}
            names = list(impls)
            for rep in range(REPEATS):
                for name in names if rep % 2 == 0 else names[::-1]:
                    make = impls[name]
                    samples[name]["t1"].append(await _timed(make))
                    samples[name]["tN"].append(await _timed(lambda: asyncio.gather(*(make() for _ in range(n_tasks)))))
            stats = pool.stats().as_dict()

    rows = []
    eff: dict[str, float] = {}
    for name in names:
        t1 = median(samples[name]["t1"])
        tn = median(samples[name]["tN"])
        ideal = t1 * n_tasks / workers
        eff[name] = ideal / tn
        rows.append({
            "impl": name,
            "workers": workers,
            "cpus": cpus,
            "tasks": n_tasks,
            "t1 (s)": t1,
            "ideal (s)": ideal,
            "actual (s)": tn,
            "efficiency": eff[name],
            "speed-up vs 1 task": t1 * n_tasks / tn,
        })
    for row in rows:
        row["eff ratio vs stdlib"] = row["efficiency"] / eff["ProcessPoolExecutor"]
    raw = {"samples_seconds": samples, "iterations_per_task": iters, "pool_stats_at_end": stats}
    return rows, raw


def main() -> list[dict[str, Any]]:
    rows, raw = asyncio.run(_main())
    report(NAME, rows, notes=[
        f"kernel: pure-Python loop (bench.kernels.spin), {raw['iterations_per_task']:,} iterations "
        f"= about {TASK_SECONDS}s calibrated in the parent",
        "SharedPool(processes=cpus, cpus=cpu_budget().cpus, start_method='forkserver'); the stdlib "
        "ProcessPoolExecutor has the same worker count and start method",
        "t1 = one task alone; actual = 4 x workers tasks at once via asyncio.gather; "
        "ideal = t1 * tasks / workers; efficiency = ideal / actual",
        f"median of {REPEATS} repeats after warm-up; the two implementations alternate within each repeat",
    ], raw=raw, title="cpu_scaling: pure-Python kernel across workers")
    return rows


if __name__ == "__main__":
    main()
