"""The loop-dispatched pool's new edges: prefetch, batching, on_start, with real worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from bridge import SerializationError, SharedPool, WorkerCrashed
from bridge.testing import asyncio_test
from tests import workfns
from tests.conftest import Gate, process_gone, until
from tests.unit import poolfns


async def _warm(pool: SharedPool) -> None:
    """Short calls first: recent run times this short let a worker's pipe hold several calls."""
    assert await asyncio.gather(*(pool.run(workfns.square, i) for i in range(40))) == [i * i for i in range(40)]


async def _prefetched(pool: SharedPool) -> None:
    """A worker always holds one call behind its running one (more only while calls are short)."""
    await until(lambda: pool.stats().prefetched >= 1, "a call to be prefetched behind the running one")


@asyncio_test
async def test_calls_prefetched_behind_a_killed_worker_run_elsewhere_exactly_once(tmp_path: Path, gate: Gate) -> None:
    async with SharedPool(processes=1, cpus=2) as pool:
        await _warm(pool)
        victim = asyncio.ensure_future(pool.run(workfns.wait_at_gate, gate.started, gate.gate))
        pid = await gate.wait_started()
        behind = [asyncio.ensure_future(pool.run(poolfns.record, str(tmp_path), f"call-{i}")) for i in range(3)]
        await _prefetched(pool)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerCrashed, match="SIGKILL"):
            await victim
        pids = await asyncio.gather(*behind)
        assert pid not in pids
        for i in range(3):
            assert poolfns.runs(str(tmp_path), f"call-{i}") == [pids[i]]  # ran once, on the replacement
        stats = pool.stats()
        assert (stats.crashed, stats.completed, stats.prefetched, stats.queued) == (1, 43, 0, 0)


@asyncio_test
async def test_run_times_are_the_workers_own_even_when_answers_arrive_together() -> None:
    """Answers read from the pipe together arrive at the same instant; the run times in the stats (and
    the prefetch depth sized from them) are what each call took in its worker, never 0 for a real call."""
    async with SharedPool(processes=1, cpus=2) as pool:
        assert await asyncio.gather(*(pool.run(workfns.square, i) for i in range(400))) == [i * i for i in range(400)]
        assert pool.stats().run_time_ms["p50"] > 0
    async with SharedPool(processes=1, cpus=2) as pool:
        await asyncio.gather(*(pool.run(time.sleep, 0.2) for _ in range(3)))  # queued behind each other
        times = pool.stats().run_time_ms
        assert 200 <= times["p50"] <= times["p99"]  # each slept 0.2 s in the worker, however long it waited


@asyncio_test
async def test_a_prefetched_calls_timeout_starts_when_it_starts(tmp_path: Path) -> None:
    first, second = Gate(tmp_path, "first"), Gate(tmp_path, "second")
    async with SharedPool(processes=1, cpus=2) as pool:
        await _warm(pool)
        loop = asyncio.get_running_loop()
        ahead = asyncio.ensure_future(pool.run(workfns.wait_at_gate, first.started, first.gate, "ahead"))
        await first.wait_started()
        quick = asyncio.ensure_future(pool.run(workfns.square, 5, timeout=2.0))
        hangs = asyncio.ensure_future(pool.run(workfns.wait_at_gate, second.started, second.gate, timeout=1.0))
        await _prefetched(pool)
        await asyncio.sleep(2.5)  # both timeouts would be over, had their clocks started when they were sent
        assert not quick.done() and not hangs.done()
        await first.open()
        assert await ahead == "ahead"
        assert await quick == 25
        pid = await second.wait_started()
        started = loop.time()
        with pytest.raises(TimeoutError, match="1.0s"):
            await hangs
        assert loop.time() - started >= 0.9  # its own second, counted from its start
        await process_gone(pid)
        assert pool.stats().timeouts == 1


@asyncio_test
async def test_a_cancelled_prefetched_call_never_runs_and_costs_no_worker(tmp_path: Path, gate: Gate) -> None:
    async with SharedPool(processes=1, cpus=2) as pool:
        await _warm(pool)
        blocker = asyncio.ensure_future(pool.run(workfns.wait_at_gate, gate.started, gate.gate, "done"))
        pid = await gate.wait_started()
        doomed = asyncio.ensure_future(pool.run(poolfns.record, str(tmp_path), "doomed"))
        kept = asyncio.ensure_future(pool.run(poolfns.record, str(tmp_path), "kept"))
        await _prefetched(pool)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await gate.open()
        assert await blocker == "done"
        assert await kept == pid  # the same worker: cancelling a call it had not started killed nothing
        assert poolfns.runs(str(tmp_path), "doomed") == []
        stats = pool.stats()
        assert (stats.cancelled, stats.restarts, stats.crashed) == (1, 0, 0)


@asyncio_test
async def test_a_batch_holding_one_bad_argument_fails_only_that_call(pool: SharedPool) -> None:
    calls = [pool.run(workfns.square, i) for i in range(5)]
    calls.insert(2, pool.run(workfns.square, threading.Lock()))  # cannot be pickled: refused in the caller
    calls.insert(4, pool.run(poolfns.echo, poolfns.Unloadable()))  # pickles, but cannot be rebuilt in the worker
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[2], SerializationError)
    assert isinstance(results[4], ValueError) and "cannot be rebuilt" in str(results[4])
    assert [r for i, r in enumerate(results) if i not in (2, 4)] == [i * i for i in range(5)]
    assert pool.stats().crashed == 0


@asyncio_test
async def test_large_arguments_and_results_cross_intact_in_one_batch(pool: SharedPool) -> None:
    blobs = [os.urandom(size) for size in (10, 70_000, 300_000, 3_000_000, 5)]
    assert await asyncio.gather(*(pool.run(poolfns.echo, blob) for blob in blobs)) == blobs
    # Sizes around the parent's read size and the out-of-band threshold, pickled results among raw ones.
    mixed = [os.urandom(size) for size in (500, 511, 512, 513, 2_000, 40_000, 65_535, 65_536, 1)] + [list(range(3000))]
    assert await asyncio.gather(*(pool.run(poolfns.echo, value) for value in mixed)) == mixed


@asyncio_test
async def test_on_start_fires_once_on_the_loop_when_a_worker_really_starts_the_call(tmp_path: Path, gate: Gate) -> None:
    async with SharedPool(processes=1, cpus=2) as pool:
        await _warm(pool)
        loop_thread = threading.get_ident()
        starts: list[tuple[str, int]] = []

        def hook(name: str):  # noqa: ANN202
            return lambda: starts.append((name, threading.get_ident()))

        first = asyncio.ensure_future(
            pool.run(workfns.wait_at_gate, gate.started, gate.gate, on_start=hook("first")))
        pid = await gate.wait_started()
        assert starts == [("first", loop_thread)]
        behind = asyncio.ensure_future(pool.run(workfns.square, 3, on_start=hook("behind")))
        dropped = asyncio.ensure_future(pool.run(workfns.square, 4, on_start=hook("dropped")))
        await _prefetched(pool)
        waiting = asyncio.ensure_future(pool.run(workfns.square, 6, on_start=hook("queued-cancelled")))
        await asyncio.sleep(0)
        dropped.cancel()
        waiting.cancel()
        assert starts == [("first", loop_thread)]  # prefetched and queued calls have not started
        os.kill(pid, signal.SIGKILL)  # "behind" goes back to the queue; it starts on the replacement
        with pytest.raises(WorkerCrashed):
            await first
        assert await behind == 9
        for task in (dropped, waiting):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert starts == [("first", loop_thread), ("behind", loop_thread)]
        done = threading.Event()
        assert await asyncio.wrap_future(pool.submit(workfns.square, 2, on_start=done.set)) == 4
        assert done.is_set()


@asyncio_test
async def test_calls_from_another_thread_and_its_own_loop_take_the_thread_path(pool: SharedPool, gate: Gate) -> None:
    results: dict[str, object] = {}

    async def elsewhere() -> None:
        own = threading.get_ident()
        started: list[int] = []
        results["run"] = await pool.run(workfns.add, 2, 3, scale=2, on_start=lambda: started.append(threading.get_ident()))
        results["started_on"] = started == [own]
        results["sync_future"] = pool.submit(workfns.square, 9).result(timeout=60)

    thread = threading.Thread(target=asyncio.run, args=(elsewhere(),))
    thread.start()
    await until(lambda: not thread.is_alive(), "the other thread's loop to finish")
    assert results == {"run": 10, "started_on": True, "sync_future": 81}

    # a running call cancelled from another thread: its worker is killed, as from the loop
    future = await asyncio.get_running_loop().run_in_executor(
        None, pool.submit, workfns.wait_at_gate, gate.started, gate.gate)
    pid = await gate.wait_started()
    await asyncio.get_running_loop().run_in_executor(None, future.cancel)
    await process_gone(pid)
    await until(lambda: pool.stats().cancelled == 1, "the cancel to reach the pool")
    assert await pool.run(workfns.square, 5) == 25


def _without_a_loop() -> dict[str, object]:
    """A script's life with the pool: no event loop anywhere in this thread."""
    pool = SharedPool(processes=1, cpus=2)
    pool.start_sync()
    out: dict[str, object] = {}
    try:
        futures = [pool.submit(workfns.square, i) for i in range(200)]
        out["squares"] = [f.result(timeout=60) for f in futures] == [i * i for i in range(200)]
        out["run"] = asyncio.run(pool.run(workfns.add, 1, 2))
        try:
            pool.submit(workfns.fail_with, "boom").result(timeout=60)
        except LookupError as exc:
            out["error"] = str(exc)
        out["worker"] = pool.submit(workfns.getpid).result(timeout=60)
    finally:
        pool.close_sync(timeout=5)
    out["running"] = pool.running
    return out


@asyncio_test
async def test_a_pool_started_without_a_loop_serves_every_thread() -> None:
    from tests.conftest import in_daemon_thread

    out = await in_daemon_thread(_without_a_loop)
    assert {k: v for k, v in out.items() if k != "worker"} == {
        "squares": True, "run": 3, "error": "boom", "running": False}
    await process_gone(int(out["worker"]))  # type: ignore[arg-type]
