"""The shared pool on a Dask cluster vs the local pool, on this machine, in one run.

A ``distributed.LocalCluster`` with N worker processes (N = the CPU budget, one
thread each, scheduler in this process, loopback) and a local ``SharedPool``
with the same N workers are alive at the same time; each repeat times one then
the other, alternating which goes first. Both are driven through the same
``SharedPool.run`` API, only ``backend`` differs, so the ratios are what a team
pays for pointing ``CUTOVER_POOL`` at a cluster when the cluster is this box.

* dispatch, one at a time: ``noop``, await each call before the next;
* dispatch, pipelined: ``noop``, all calls in flight at once (``max_queued`` raised for both);
* CPU-bound throughput: 4 x N tasks of ~0.1 s of pure-Python ``spin`` at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import dask
from distributed import LocalCluster

from bridge import SharedPool, cpu_budget

from .kernels import iterations_for, noop, spin
from .report import median, report

NAME = "dask"
N_SEQUENTIAL = {"local": 300, "dask": 40}
N_PIPELINED = {"local": 2000, "dask": 300}
TASK_SECONDS = 0.1
REPEATS = 5


async def _one_at_a_time(pool: SharedPool, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        assert await pool.run(noop, i) == i
    return time.perf_counter() - t0


async def _pipelined(pool: SharedPool, n: int) -> float:
    t0 = time.perf_counter()
    assert await asyncio.gather(*(pool.run(noop, i) for i in range(n))) == list(range(n))
    return time.perf_counter() - t0


def _cpu_bound(iters: int, n: int) -> Callable[[SharedPool, int], Awaitable[float]]:
    async def run(pool: SharedPool, _n: int) -> float:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(pool.run(spin, iters) for _ in range(n)))
        assert len(set(results)) == 1
        return time.perf_counter() - t0

    return run


async def _main() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    workers = cpu_budget().cpus
    iters = iterations_for(TASK_SECONDS)
    n_cpu = 4 * workers

    def start_cluster() -> LocalCluster:
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                dashboard_address=None)

    cluster = await asyncio.to_thread(start_cluster)
    url = "dask://" + cluster.scheduler_address.removeprefix("tcp://")
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {"workers": workers, "spin_iterations": iters, "scheduler": url}
    try:
        async with SharedPool(processes=workers, cpus=workers, max_queued=4096, backend="local") as local, \
                SharedPool(cpus=workers, max_queued=4096, backend=url) as remote:
            pools = {"local": local, "dask": remote}
            for pool in pools.values():  # warm-up: every worker of both runs each kernel
                await _pipelined(pool, 100)
                await asyncio.gather(*(pool.run(spin, iters // 10) for _ in range(2 * workers)))
            modes: list[tuple[str, Callable[[SharedPool, int], Awaitable[float]], dict[str, int]]] = [
                ("dispatch one-at-a-time", _one_at_a_time, N_SEQUENTIAL),
                ("dispatch pipelined", _pipelined, N_PIPELINED),
                ("cpu-bound 0.1 s tasks", _cpu_bound(iters, n_cpu), {"local": n_cpu, "dask": n_cpu}),
            ]
            for mode, fn, counts in modes:
                samples: dict[str, list[float]] = {"local": [], "dask": []}
                for rep in range(REPEATS):
                    order = ["local", "dask"] if rep % 2 == 0 else ["dask", "local"]
                    for which in order:
                        samples[which].append(await fn(pools[which], counts[which]))
                per_task = {k: median(v) / counts[k] for k, v in samples.items()}
                row: dict[str, Any] = {"mode": mode, "workers": workers}
                if mode.startswith("dispatch"):
                    row |= {
                        "local us/task": per_task["local"] * 1e6,
                        "dask us/task": per_task["dask"] * 1e6,
                        "ratio dask/local": per_task["dask"] / per_task["local"],
                    }
                else:
                    row |= {"tasks": n_cpu}
                row |= {
                    "local tasks/s": 1 / per_task["local"],
                    "dask tasks/s": 1 / per_task["dask"],
                    "throughput dask/local": per_task["local"] / per_task["dask"],
                }
                rows.append(row)
                raw[mode] = {"tasks": counts, "samples_seconds": samples}
            raw["final_stats"] = {k: p.stats().as_dict() for k, p in pools.items()}
    finally:
        await asyncio.to_thread(cluster.close)
    return rows, raw


def main() -> list[dict[str, Any]]:
    rows, raw = asyncio.run(_main())
    report(NAME, rows, notes=[
        f"median of {REPEATS} repeats after warm-up, local and dask alternating; both driven through "
        "SharedPool.run, same worker count (the CPU budget), one thread per Dask worker",
        "dask = distributed.LocalCluster on 127.0.0.1, scheduler in this process, workers in nanny-managed "
        "processes; local = SharedPool's own forkserver workers",
        "ratio dask/local > 1: dispatch costs that many times more on the cluster; throughput dask/local < 1: "
        "the cluster does less CPU work per second on this box (its scheduler and client share the cores)",
        "on real separate machines add the network round trip to every dispatch figure; CPU-bound throughput "
        "then scales with the cluster's cores instead of this machine's",
    ], raw=raw, title="dask: the shared pool on a Dask cluster vs the local pool, same machine, same run")
    return rows


if __name__ == "__main__":
    main()
