"""The shared pool against its peers and the raw pipe, side by side in one run.

Contenders, all alive at once with the same worker count (forkserver where the
library lets us choose): ``SharedPool.run``; stdlib ``ProcessPoolExecutor`` and
loky through ``loop.run_in_executor``; pebble's ``ProcessPool`` (its futures
wrapped for asyncio); ``anyio.to_process.run_sync`` (a capacity limiter of the
worker count); aiomultiprocess's ``Pool.apply`` (which runs coroutine
functions, so it gets an ``async def`` twin of each kernel); and a *raw pipe*:
one bare process per worker echoing pickled calls over a
``multiprocessing.Pipe``, fed and drained by a thread each, no pool semantics
at all, the floor any pool pays on top of.

Scenarios: a tiny no-op and a 100 KB payload (sent and returned), one call at
a time and pipelined (all in flight via ``asyncio.gather``), 1 and 2 workers;
then CPU-bound efficiency (ideal time / actual for pure-Python tasks of 50 ms)
and the event loop's lag p99 while a pipelined burst saturates the pool. Each
repeat runs every contender once, the order rotated; the figure is the median.
The peers come from the ``bench`` dependency group (``pip install -e . --group bench``, which ``make bench`` runs); a
peer that is not installed is skipped and said so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

# absolute imports: anyio.to_process re-imports this module by path in its workers
from bench.kernels import iterations_for, noop, spin
from bench.report import median, report
from bridge import SharedPool

NAME = "peers"
REPEATS = 5
TINY_PIPELINED, TINY_SEQUENTIAL = 2000, 300
BIG_PIPELINED, BIG_SEQUENTIAL = 300, 100
BIG = 100_000
CPU_TASKS, CPU_SECONDS = 16, 0.05
LAG_CALLS, LAG_SLEEP = 4000, 0.001

Runner = Callable[[Callable[..., Any], Any], Awaitable[Any]]


async def anoop(x: Any = 0) -> Any:
    """aiomultiprocess runs coroutine functions only."""
    return x


async def aspin(n: int) -> int:
    return spin(n)


def _raw_worker(conn: Any) -> None:
    while True:
        message = conn.recv_bytes()
        if not message:
            return
        fn, arg = pickle.loads(message)
        conn.send_bytes(pickle.dumps(fn(arg), protocol=pickle.HIGHEST_PROTOCOL))


class RawPipe:
    """The floor: bare processes echoing pickled calls over their own pipe; threads feed and drain them."""

    def __init__(self, workers: int) -> None:
        ctx = multiprocessing.get_context("forkserver")
        self.conns, self.procs = [], []
        for _ in range(workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_raw_worker, args=(child,), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs, strict=True):
            conn.send_bytes(b"")
            proc.join(5)
            conn.close()

    def batch(self, fn: Callable[..., Any], args: list[Any]) -> list[Any]:
        """Every call in flight at once: per worker, one thread writes its share while another reads."""
        shares = [args[i::len(self.conns)] for i in range(len(self.conns))]
        results: list[list[Any]] = [[] for _ in self.conns]

        def feed(conn: Any, share: list[Any]) -> None:
            for arg in share:
                conn.send_bytes(pickle.dumps((fn, arg), protocol=pickle.HIGHEST_PROTOCOL))

        def drain(conn: Any, n: int, out: list[Any]) -> None:
            for _ in range(n):
                out.append(pickle.loads(conn.recv_bytes()))

        threads = []
        for conn, share, out in zip(self.conns, shares, results, strict=True):
            threads += [threading.Thread(target=feed, args=(conn, share)),
                        threading.Thread(target=drain, args=(conn, len(share), out))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [r for out in results for r in out]

    def one(self, fn: Callable[..., Any], arg: Any) -> Any:
        conn = self.conns[0]
        conn.send_bytes(pickle.dumps((fn, arg), protocol=pickle.HIGHEST_PROTOCOL))
        return pickle.loads(conn.recv_bytes())


async def _contenders(stack: AsyncExitStack, workers: int) -> tuple[dict[str, Runner], list[str]]:
    """Every installed pool with ``workers`` workers, as ``run(fn, arg)`` coroutines; and the peers missing."""
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("forkserver")
    runners: dict[str, Runner] = {}
    missing: list[str] = []
    pool = await stack.enter_async_context(SharedPool(processes=workers, cpus=max(2, workers),
                                                      max_queued=4096, start_method="forkserver"))
    runners["SharedPool"] = lambda fn, arg: pool.run(fn, arg)
    stdlib = stack.enter_context(concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx))
    runners["stdlib"] = lambda fn, arg: loop.run_in_executor(stdlib, fn, arg)
    try:
        import loky

        lk = loky.ProcessPoolExecutor(max_workers=workers)
        stack.callback(lk.shutdown)
        runners["loky"] = lambda fn, arg: loop.run_in_executor(lk, fn, arg)
    except ImportError:
        missing.append("loky")
    try:
        import pebble

        pb = pebble.ProcessPool(max_workers=workers, context=ctx)
        stack.callback(lambda: (pb.close(), pb.join()))
        runners["pebble"] = lambda fn, arg: asyncio.wrap_future(pb.schedule(fn, args=(arg,)))
    except ImportError:
        missing.append("pebble")
    try:
        from anyio import CapacityLimiter, to_process

        limiter = CapacityLimiter(workers)
        runners["anyio"] = lambda fn, arg: to_process.run_sync(fn, arg, limiter=limiter)
    except ImportError:
        missing.append("anyio")
    try:
        import aiomultiprocess

        amp = await stack.enter_async_context(aiomultiprocess.Pool(processes=workers))
        twins = {noop: anoop, spin: aspin}
        runners["aiomultiprocess"] = lambda fn, arg: amp.apply(twins.get(fn, fn), (arg,))
    except ImportError:
        missing.append("aiomultiprocess")
    return runners, missing


async def _pipelined(run: Runner, fn: Callable[..., Any], args: list[Any]) -> float:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(run(fn, a) for a in args))
    elapsed = time.perf_counter() - t0
    assert len(results) == len(args) and results[-1] == args[-1]
    return elapsed


async def _sequential(run: Runner, fn: Callable[..., Any], args: list[Any]) -> float:
    t0 = time.perf_counter()
    for a in args:
        await run(fn, a)
    return time.perf_counter() - t0


def _raw_time(raw: RawPipe, pipelined: bool, args: list[Any]) -> float:
    t0 = time.perf_counter()
    if pipelined:
        assert len(raw.batch(noop, args)) == len(args)
    else:
        for a in args:
            raw.one(noop, a)
    return time.perf_counter() - t0


async def _lag_p99(run: Runner) -> float:
    """The loop's lag p99 (ms) while a pipelined burst of tiny calls keeps the pool saturated."""
    lags: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(LAG_SLEEP)
            lags.append(time.perf_counter() - t0 - LAG_SLEEP)

    prober = asyncio.ensure_future(probe())
    await asyncio.gather(*(run(noop, i) for i in range(LAG_CALLS)))
    done.set()
    await prober
    ordered = sorted(lags)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000 if ordered else 0.0


async def _measure(workers: int) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    async with AsyncExitStack() as stack:
        runners, missing = await _contenders(stack, workers)
        raw = RawPipe(workers)
        stack.callback(raw.close)
        names = list(runners)
        for name in names:  # warm-up: start every worker, prime every path
            await _pipelined(runners[name], noop, list(range(200)))
        raw.batch(noop, list(range(200)))
        big = [bytes([i % 256]) * BIG for i in range(BIG_PIPELINED)]
        scenarios = [
            ("tiny", "pipelined", list(range(TINY_PIPELINED))),
            ("tiny", "one-at-a-time", list(range(TINY_SEQUENTIAL))),
            ("100 KB", "pipelined", big),
            ("100 KB", "one-at-a-time", big[:BIG_SEQUENTIAL]),
        ]
        for payload, mode, args in scenarios:
            samples: dict[str, list[float]] = {name: [] for name in [*names, "raw pipe"]}
            for rep in range(REPEATS):
                order = names[rep % len(names):] + names[:rep % len(names)]
                for name in order:
                    timer = _pipelined if mode == "pipelined" else _sequential
                    samples[name].append(await timer(runners[name], noop, args))
                if payload == "tiny":
                    samples["raw pipe"].append(_raw_time(raw, mode == "pipelined", args))
            row: dict[str, Any] = {"payload": payload, "mode": mode, "workers": workers}
            for name, values in samples.items():
                if values:
                    row[f"{name} us/call"] = median(values) / len(args) * 1e6
            rows.append(row)
        iters = iterations_for(CPU_SECONDS)
        efficiency: dict[str, list[float]] = {name: [] for name in names}
        lag: dict[str, list[float]] = {name: [] for name in names}
        for rep in range(3):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                t0 = time.perf_counter()
                await asyncio.gather(*(runners[name](spin, iters) for _ in range(CPU_TASKS)))
                efficiency[name].append(CPU_TASKS * CPU_SECONDS / workers / (time.perf_counter() - t0))
                lag[name].append(await _lag_p99(runners[name]))
        rows.append({"payload": "CPU 50 ms", "mode": "efficiency", "workers": workers,
                     **{f"{name} us/call": median(v) for name, v in efficiency.items()}})
        rows.append({"payload": "tiny", "mode": "loop lag p99 ms", "workers": workers,
                     **{f"{name} us/call": median(v) for name, v in lag.items()}})
    return rows, missing


GOALS = [  # (payload, mode, peer, at least this many times the peer's throughput)
    ("tiny", "pipelined", "stdlib", 5.0), ("tiny", "pipelined", "pebble", 3.0), ("tiny", "pipelined", "anyio", 3.0),
    ("tiny", "pipelined", "raw pipe", 0.5), ("tiny", "one-at-a-time", "stdlib", 2.0),
    ("100 KB", "pipelined", "stdlib", 1.3), ("100 KB", "one-at-a-time", "stdlib", 1.3),
]


def _goals(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for payload, mode, peer, goal in GOALS:
        for row in rows:
            if (row["payload"], row["mode"]) != (payload, mode) or f"{peer} us/call" not in row:
                continue
            ratio = row[f"{peer} us/call"] / row["SharedPool us/call"]
            verdict = "met" if ratio >= goal else "NOT met"
            lines.append(f"{payload} {mode}, {row['workers']} worker(s): SharedPool is {ratio:.2f}x {peer}'s "
                         f"throughput (goal {goal:g}x: {verdict})")
    return lines


def _load() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    load_before = _load()
    for workers in (1, 2):
        found, missing = asyncio.run(_measure(workers))
        rows += found
    for row in rows:  # the headline ratios, per row: how many times faster SharedPool is
        ours = row["SharedPool us/call"]
        if row["mode"] in ("efficiency", "loop lag p99 ms"):
            continue
        for peer in ("stdlib", "pebble", "anyio"):
            if f"{peer} us/call" in row:
                row[f"x {peer}"] = row[f"{peer} us/call"] / ours
        if "raw pipe us/call" in row:
            row["/ raw pipe"] = ours / row["raw pipe us/call"]
    notes = [
        f"median of {REPEATS} repeats (3 for the CPU rows), contenders alternating; every pool alive at once, "
        "same worker count, forkserver where the library takes a context (anyio and aiomultiprocess spawn)",
        "us/call columns: microseconds per call, except the 'efficiency' row (ideal time / actual for "
        f"{CPU_TASKS} pure-Python tasks of {CPU_SECONDS * 1000:g} ms; 1.0 is perfect) and the 'loop lag p99 ms' row "
        f"(how late a {LAG_SLEEP * 1000:g} ms sleep wakes while {LAG_CALLS} tiny calls are in flight)",
        "x peer: the peer's time per call / SharedPool's (above 1: SharedPool is faster); / raw pipe: SharedPool's "
        "time per call / the bare pipe's (the floor: no timeouts, no crash handling, no cancellation)",
        f"machine load average (1, 5, 15 min) at the start: {load_before}; at the end: {_load()} "
        "(2 cores: above 2, every contender waits for a CPU, the one doing most per call in one thread most)",
        *_goals(rows),
    ]
    if missing:
        notes.append(f"not installed, skipped: {', '.join(missing)} (pip install -e . --group bench)")
    report(NAME, rows, notes=notes, title="peers: SharedPool against stdlib, loky, pebble, anyio, aiomultiprocess "
           "and the raw pipe")
    return rows


if __name__ == "__main__":
    main()
