"""Event-loop lag while the CPUs are saturated, by where the CPU work runs.

A probe coroutine sleeps 5 ms again and again for the window and records how
late each wake-up is. Meanwhile a pure-Python kernel runs, as many tasks as
keep the CPUs busy, either inline on the loop (blocking it between awaits), in
a ``ThreadPoolExecutor`` (same process, so the GIL), or in the shared process
pool. An idle row shows the probe's own floor.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge import SharedPool, cpu_budget

from .kernels import iterations_for, spin
from .report import median, report

NAME = "loop_lag"
WINDOW = 2.0
WARMUP_WINDOW = 0.3
SLEEP = 0.005
TASK_SECONDS = 0.05
REPEATS = 3


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def _probe(end: float, lags: list[float]) -> None:
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        await asyncio.sleep(SLEEP)
        lags.append(time.perf_counter() - t0 - SLEEP)


async def _driver(run_one: Callable[[], Awaitable[Any]], end: float, done: list[float]) -> None:
    """Start one task after another until the window ends; record when each finishes."""
    while time.perf_counter() < end:
        await run_one()
        done.append(time.perf_counter())


async def _inline_driver(iters: int, end: float, done: list[float]) -> None:
    """CPU work called directly on the loop: it blocks every other coroutine while it runs."""
    while time.perf_counter() < end:
        spin(iters)
        done.append(time.perf_counter())
        await asyncio.sleep(0)


async def _window(mode: str, ctx: dict[str, Any], length: float) -> dict[str, Any]:
    iters, concurrency = ctx["iters"], ctx["concurrency"]
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    done: list[float] = []
    start = time.perf_counter()
    end = start + length
    if mode == "idle":
        drivers = []
    elif mode == "inline":
        drivers = [_inline_driver(iters, end, done)]
    elif mode == "threads":
        tp = ctx["threads"]
        drivers = [_driver(lambda: loop.run_in_executor(tp, spin, iters), end, done) for _ in range(concurrency)]
    else:
        pool: SharedPool = ctx[mode]
        drivers = [_driver(lambda: pool.run(spin, iters), end, done) for _ in range(concurrency)]
    # the probe starts first, so inline work cannot delay its first sleep unnoticed
    probe = asyncio.ensure_future(_probe(end, lags))
    await asyncio.gather(probe, *drivers)  # drivers finish the task in flight at the end (not counted)
    return {"lags": lags, "tasks": sum(1 for t in done if t <= end), "elapsed": length}


async def _main() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    cpus = cpu_budget().cpus
    iters = iterations_for(TASK_SECONDS)
    default_procs = max(1, cpus - 1)
    labels = {
        "idle": "idle (no CPU work)",
        "inline": "inline on the loop",
        "threads": f"ThreadPoolExecutor({cpus})",
        "pool": f"SharedPool(processes={cpus})",
        "pool_default": f"SharedPool default (processes={default_procs})",
    }
    modes = ["idle", "inline", "threads", "pool"] + (["pool_default"] if default_procs != cpus else [])
    async with SharedPool(processes=cpus, cpus=cpus) as pool_full, \
            SharedPool(processes=default_procs, cpus=cpus) as pool_default:
        with concurrent.futures.ThreadPoolExecutor(max_workers=cpus) as threads:
            ctx = {"iters": iters, "concurrency": 2 * cpus, "threads": threads,
                   "pool": pool_full, "pool_default": pool_default}
            for mode in modes:  # warm-up
                await _window(mode, ctx, WARMUP_WINDOW)
            results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
            for rep in range(REPEATS):
                order = modes[rep % len(modes):] + modes[:rep % len(modes)]
                for mode in order:
                    results[mode].append(await _window(mode, ctx, WINDOW))

    rows = []
    summary: dict[str, dict[str, float]] = {}
    for mode in modes:
        reps = results[mode]
        summary[mode] = {
            "p50": median(_pct(r["lags"], 50) for r in reps) * 1000,
            "p99": median(_pct(r["lags"], 99) for r in reps) * 1000,
            "max": median(max(r["lags"]) for r in reps) * 1000,
            "tasks": median(r["tasks"] for r in reps),
            "probes": median(len(r["lags"]) for r in reps),
        }
    ref = summary["pool"]
    for mode in modes:
        s = summary[mode]
        rows.append({
            "mode": labels[mode],
            "lag p50 (ms)": s["p50"],
            "lag p99 (ms)": s["p99"],
            "lag max (ms)": s["max"],
            "p50 / pool": s["p50"] / ref["p50"],
            "p99 / pool": s["p99"] / ref["p99"],
            "probe wake-ups": int(s["probes"]),
            "tasks done": int(s["tasks"]),
            "tasks/s": s["tasks"] / WINDOW,
            "throughput / pool": s["tasks"] / ref["tasks"] if ref["tasks"] else float("nan"),
        })
    raw = {
        "iterations_per_task": iters,
        "per_repeat": {
            mode: [{"p50_ms": _pct(r["lags"], 50) * 1000, "p99_ms": _pct(r["lags"], 99) * 1000,
                    "max_ms": max(r["lags"]) * 1000, "tasks": r["tasks"], "probes": len(r["lags"])}
                   for r in results[mode]]
            for mode in modes
        },
    }
    return rows, raw


def main() -> list[dict[str, Any]]:
    rows, raw = asyncio.run(_main())
    cpus = cpu_budget().cpus
    report(NAME, rows, notes=[
        f"probe: await asyncio.sleep({SLEEP}) in a loop for {WINDOW}s; lag = actual sleep - {SLEEP}s",
        f"kernel: pure-Python loop (bench.kernels.spin), {raw['iterations_per_task']:,} iterations = about "
        f"{TASK_SECONDS}s per task; {2 * cpus} tasks kept in flight for threads and pools, one after another "
        "for inline (the loop has one thread)",
        "tasks done: tasks finished inside the window; tasks/s = tasks done / window",
        f"x / pool columns divide by the SharedPool(processes={cpus}) row; lag p50/p99/max and tasks are "
        f"medians over {REPEATS} repeats (modes rotate order each repeat) after a warm-up",
        "SharedPool's default leaves one CPU for the event loop (processes = budget - 1)",
    ], raw=raw, title="loop_lag: event-loop lag with the CPUs saturated")
    return rows


if __name__ == "__main__":
    main()
