"""The shared pool, with real worker processes: results, errors, crashes, timeouts, cancellation."""

from __future__ import annotations

import asyncio
import contextvars
import multiprocessing
import os
import signal
import threading
from pathlib import Path

import pytest

from bridge import (
    PoolBusy,
    PoolClosed,
    RemoteTraceback,
    SerializationError,
    SharedPool,
    WorkerCrashed,
    WorkerStartupError,
    as_future,
    get_pool,
    set_pool,
)
from bridge.testing import asyncio_test
from tests import workfns
from tests.conftest import WAIT, Gate, process_gone


@asyncio_test
async def test_run_returns_the_result_of_args_and_kwargs(pool: SharedPool) -> None:
    assert await pool.run(workfns.add, 2, 3, scale=10) == 50
    results = await asyncio.gather(*(pool.run(workfns.square, i) for i in range(50)))
    assert results == [i * i for i in range(50)]
    assert pool.stats().completed == 51


@asyncio_test
async def test_work_runs_in_other_processes(pool: SharedPool) -> None:
    pids = set(await asyncio.gather(*(pool.run(workfns.getpid) for _ in range(20))))
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2


@asyncio_test
async def test_an_exception_crosses_as_itself_with_the_worker_traceback(pool: SharedPool) -> None:
    with pytest.raises(LookupError, match="no such face") as caught:
        await pool.run(workfns.fail_with, "no such face")
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "fail_with" in cause.tb
    assert pool.stats().failed == 1
    assert await pool.run(workfns.square, 4) == 16


@asyncio_test
async def test_worker_killed_mid_call_fails_only_that_call(pool: SharedPool, gate: Gate) -> None:
    victim = asyncio.ensure_future(pool.run(workfns.wait_at_gate, gate.started, gate.gate))
    pid = await gate.wait_started()
    bystanders = [pool.run(workfns.square, i) for i in range(10)]
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerCrashed, match="SIGKILL") as caught:
        await victim
    assert caught.value.pid == pid
    assert await asyncio.gather(*bystanders) == [i * i for i in range(10)]
    after = await asyncio.gather(*(pool.run(workfns.square, i) for i in range(100)))
    assert after == [i * i for i in range(100)]
    stats = pool.stats()
    assert (stats.crashed, stats.failed) == (1, 0)


@asyncio_test
async def test_a_call_that_kills_its_worker_fails_alone(pool: SharedPool) -> None:
    results = await asyncio.gather(
        pool.run(workfns.kill_self), *(pool.run(workfns.square, i) for i in range(20)), return_exceptions=True
    )
    assert isinstance(results[0], WorkerCrashed)
    assert results[1:] == [i * i for i in range(20)]
    assert await pool.run(workfns.square, 9) == 81


@asyncio_test
async def test_timeout_kills_the_worker_and_frees_its_place(pool: SharedPool, gate: Gate) -> None:
    call = asyncio.ensure_future(pool.run(workfns.wait_at_gate, gate.started, gate.gate, timeout=0.5))
    pid = await gate.wait_started()
    with pytest.raises(TimeoutError, match="0.5s"):
        await call
    await process_gone(pid)
    pids = set(await asyncio.gather(*(pool.run(workfns.getpid) for _ in range(10))))
    assert pid not in pids
    assert pool.stats().timeouts == 1


@asyncio_test
async def test_cancelling_the_task_kills_the_running_call(pool: SharedPool, gate: Gate) -> None:
    call = asyncio.ensure_future(pool.run(workfns.wait_at_gate, gate.started, gate.gate))
    pid = await gate.wait_started()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await process_gone(pid)
    assert await pool.run(workfns.square, 5) == 25
    assert pool.stats().cancelled == 1


@asyncio_test
async def test_a_cancelled_call_that_answers_within_the_grace_keeps_its_worker(gate: Gate) -> None:
    """A client that hangs up on a call about to answer must not cost a worker restart (its initializer again)."""
    async with SharedPool(processes=1, cpus=2, cancel_grace=WAIT) as pool:
        call = asyncio.ensure_future(pool.run(workfns.wait_at_gate, gate.started, gate.gate, "dropped"))
        pid = await gate.wait_started()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call  # at once, not when the call ends
        await gate.open()
        assert await pool.run(os.getpid) == pid  # the same worker, free again
        stats = pool.stats()
        assert (stats.cancelled, stats.restarts, stats.crashed) == (1, 0, 0)


def test_cancel_grace_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="cancel_grace must be at least 0"):
        SharedPool(processes=1, cpus=1, cancel_grace=-1)


@asyncio_test
async def test_a_cancelled_queued_call_never_runs(tmp_path: Path, gate: Gate) -> None:
    async with SharedPool(processes=1, cpus=2) as pool:
        blocker = asyncio.ensure_future(pool.run(workfns.wait_at_gate, gate.started, gate.gate, "done"))
        await gate.wait_started()
        marker = tmp_path / "ran"
        queued = asyncio.ensure_future(pool.run(workfns.touch, str(marker)))
        await asyncio.sleep(0)  # let the task submit its call
        assert pool.stats().queued == 1
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        await gate.open()
        assert await blocker == "done"
        assert await pool.run(workfns.square, 3) == 9  # the single worker is free and took no other call
        assert not marker.exists()
        assert pool.stats().cancelled == 1


@asyncio_test
async def test_a_full_queue_makes_callers_wait_or_refuses_with_block_false(gate: Gate) -> None:
    async with SharedPool(processes=1, cpus=2, max_queued=2) as pool:
        blocker = asyncio.ensure_future(pool.run(workfns.wait_at_gate, gate.started, gate.gate, "done"))
        await gate.wait_started()
        queued = [asyncio.ensure_future(pool.run(workfns.square, i)) for i in range(2)]
        waiting = asyncio.ensure_future(pool.run(workfns.square, 7))
        await asyncio.sleep(0)
        stats = pool.stats()
        assert (stats.busy, stats.queued, stats.waiting) == (1, 2, 1)
        with pytest.raises(PoolBusy, match="queue is full"):
            await pool.run(workfns.square, 8, block=False)
        await gate.open()
        assert await blocker == "done"
        assert await asyncio.gather(*queued, waiting) == [0, 1, 49]


@asyncio_test
async def test_the_backlog_of_waiting_calls_is_bounded_too(gate: Gate) -> None:
    """A burst far past capacity gets PoolBusy at once, never an unbounded list of waiting calls."""
    async with SharedPool(processes=1, cpus=2, max_queued=1, max_waiting=2) as pool:
        blocker = asyncio.ensure_future(pool.run(workfns.wait_at_gate, gate.started, gate.gate, "done"))
        await gate.wait_started()
        accepted = [asyncio.ensure_future(pool.run(workfns.square, i)) for i in range(3)]  # 1 queued, 2 waiting
        await asyncio.sleep(0)
        with pytest.raises(PoolBusy, match="2 more for room"):
            await pool.run(workfns.square, 9)  # blocking, yet refused: the backlog is full
        stats = pool.stats()
        assert (stats.busy, stats.queued, stats.waiting) == (1, 1, 2)
        await gate.open()
        assert await blocker == "done"
        assert await asyncio.gather(*accepted) == [0, 1, 4]
        assert await pool.run(workfns.square, 9) == 81  # room again


def test_the_waiting_backlog_is_bounded_in_bytes_by_default_and_validated() -> None:
    from bridge.pool.memory import memory_budget

    pool = SharedPool(processes=1, cpus=2, max_queued=3, backend="local")
    assert pool.max_waiting is None  # no count limit: a gather of thousands of calls is fine
    assert pool.max_waiting_bytes == memory_budget() // 4
    assert SharedPool(processes=1, cpus=2, max_waiting=7, backend="local").max_waiting == 7
    with pytest.raises(ValueError, match="max_waiting"):
        SharedPool(processes=1, cpus=2, max_waiting=-1, backend="local")
    with pytest.raises(ValueError, match="max_waiting_bytes"):
        SharedPool(processes=1, cpus=2, max_waiting_bytes=-1, backend="local")


@asyncio_test
async def test_a_gather_far_past_the_queue_runs_under_the_default_backlog_rule() -> None:
    async with SharedPool(processes=1, cpus=2, max_queued=4) as pool:
        results = await asyncio.gather(*(pool.run(workfns.square, i) for i in range(3000)))
    assert results == [i * i for i in range(3000)]


@asyncio_test
async def test_the_waiting_backlog_refuses_past_its_byte_bound(gate: Gate) -> None:
    async with SharedPool(processes=1, cpus=2, max_queued=1, max_waiting_bytes=150_000) as pool:
        blocker = asyncio.ensure_future(pool.run(workfns.wait_at_gate, gate.started, gate.gate, "done"))
        await gate.wait_started()
        blob = b"x" * 100_000
        queued = asyncio.ensure_future(pool.run(len, blob))
        first = asyncio.ensure_future(pool.run(len, blob))  # waits: the first waiting call always fits
        await asyncio.sleep(0)
        with pytest.raises(PoolBusy, match="1 more for room"):
            await pool.run(len, blob)  # 200 KB would wait: past the 150 KB bound
        await gate.open()
        assert (await blocker, await queued, await first) == ("done", 100_000, 100_000)


@asyncio_test
async def test_unpicklable_calls_fail_alone_with_a_clear_error(pool: SharedPool) -> None:
    with pytest.raises(SerializationError, match="module level"):
        await pool.run(lambda: 1)
    with pytest.raises(SerializationError, match="square"):
        await pool.run(workfns.square, threading.Lock())
    with pytest.raises(SerializationError, match="result of return_unpicklable"):
        await pool.run(workfns.return_unpicklable)
    assert await pool.run(workfns.square, 6) == 36


@asyncio_test
async def test_initializer_runs_once_per_worker(tmp_path: Path) -> None:
    async with SharedPool(processes=2, cpus=2, initializer=workfns.record_init, initargs=(str(tmp_path),)) as pool:
        pids = set(await asyncio.gather(*(pool.run(workfns.getpid) for _ in range(200))))
        inits = {int(p.name.removeprefix("init-")) for p in tmp_path.glob("init-*")}
        assert pids <= inits
        assert len(inits) == 2
        with pytest.raises(WorkerCrashed):
            await pool.run(workfns.kill_self)
        await pool.run(workfns.square, 1)  # the replacement is ready once it answers
        assert len(list(tmp_path.glob("init-*"))) in (2, 3)


@asyncio_test
async def test_a_failing_initializer_fails_start_once_and_leaves_no_child() -> None:
    others = {child.pid for child in multiprocessing.active_children()}
    pool = SharedPool(processes=2, cpus=2, initializer=workfns.failing_init)
    with pytest.raises(WorkerStartupError, match="model file missing") as caught:
        await pool.start()
    assert "failing_init" in str(caught.value)
    assert {child.pid for child in multiprocessing.active_children()} <= others
    with pytest.raises(PoolClosed):
        await pool.run(workfns.square, 2)


@asyncio_test
async def test_native_thread_caps_keep_workers_times_threads_within_budget() -> None:
    async with SharedPool(processes=2, cpus=4) as pool:
        caps = await pool.run(workfns.thread_caps)
    assert caps["worker_threads"] == 2
    assert set(caps["env"].values()) == {"2"}
    assert caps["native"] and set(caps["native"]) == {2}


@asyncio_test
async def test_close_waits_for_running_calls_within_the_deadline(gate: Gate) -> None:
    pool = SharedPool(processes=1, cpus=2)
    await pool.start()
    call = asyncio.ensure_future(pool.run(workfns.wait_at_gate, gate.started, gate.gate, "finished"))
    await gate.wait_started()
    closing = asyncio.ensure_future(pool.close(timeout=30))
    await gate.open()
    await closing
    assert await call == "finished"
    with pytest.raises(PoolClosed):
        await pool.run(workfns.square, 1)


@asyncio_test
async def test_close_past_its_deadline_kills_running_calls_and_reaps_every_worker(gate: Gate) -> None:
    pool = SharedPool(processes=2, cpus=2)
    await pool.start()
    worker_pids = set(await asyncio.gather(*(pool.run(workfns.getpid) for _ in range(10))))
    call = asyncio.ensure_future(pool.run(workfns.wait_at_gate, gate.started, gate.gate))
    pid = await gate.wait_started()
    await pool.close(timeout=0.2)
    with pytest.raises(PoolClosed, match="before this call finished"):
        await call
    for worker in worker_pids | {pid}:
        await process_gone(worker)


@asyncio_test
async def test_the_pool_can_be_driven_from_twisted(pool: SharedPool, gate: Gate) -> None:
    assert await as_future(pool.defer(workfns.add, 1, 2, scale=3)) == 9
    with pytest.raises(LookupError):
        await as_future(pool.defer(workfns.fail_with, "x"))
    d = pool.defer(workfns.wait_at_gate, gate.started, gate.gate)
    pid = await gate.wait_started()
    d.cancel()
    with pytest.raises(asyncio.CancelledError):
        await as_future(d)
    await process_gone(pid)
    assert await as_future(pool.defer(workfns.square, 12)) == 144


@asyncio_test
async def test_threads_carry_contextvars_both_ways(pool: SharedPool) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    var.set("req-42")
    main = threading.get_ident()
    assert await pool.run_in_thread(lambda: (var.get(), threading.get_ident() != main)) == ("req-42", True)
    assert await as_future(pool.defer_to_thread(var.get)) == "req-42"


def test_fork_is_refused() -> None:
    with pytest.raises(ValueError, match="forkserver"):
        SharedPool(start_method="fork")  # type: ignore[arg-type]


def test_calls_before_start_say_how_to_start() -> None:
    pool = SharedPool(processes=1, cpus=1)
    with pytest.raises(PoolClosed, match="async with pool"):
        pool.submit(workfns.square, 1)


def test_sizes_follow_the_budget() -> None:
    assert SharedPool(cpus=1).processes == 1
    four = SharedPool(cpus=4)
    assert (four.processes, four.worker_threads) == (3, 1)
    assert SharedPool(cpus=4, processes=2).worker_threads == 2


def test_get_pool_is_one_pool_per_process() -> None:
    previous = set_pool(None)
    try:
        assert get_pool() is get_pool()
        mine = SharedPool(processes=1, cpus=1)
        set_pool(mine)
        assert get_pool() is mine
    finally:
        set_pool(previous)


@asyncio_test
async def test_stats_report_run_time_percentiles(pool: SharedPool) -> None:
    # submit() from the pool's own loop thread: awaited, never blocked on (that loop answers it)
    futures = [asyncio.wrap_future(pool.submit(workfns.square, i)) for i in range(20)]
    assert await asyncio.gather(*futures) == [i * i for i in range(20)]
    stats = pool.stats().as_dict()
    assert stats["completed"] == 20
    assert set(stats["run_time_ms"]) == {"p50", "p90", "p99"}
    assert 0 < stats["run_time_ms"]["p50"] <= stats["run_time_ms"]["p99"]


def test_pools_that_never_start_hold_no_descriptors() -> None:
    before = len(os.listdir("/proc/self/fd"))
    pools = [SharedPool(processes=1, cpus=1) for _ in range(50)]
    for unused in pools:
        unused.close_sync()
    assert len(os.listdir("/proc/self/fd")) <= before + 2


@asyncio_test
async def test_close_does_not_wait_past_its_deadline_for_thread_calls() -> None:
    release = threading.Event()
    pool = SharedPool(processes=1, cpus=1)
    await pool.start()
    stuck = asyncio.ensure_future(pool.run_in_thread(release.wait, 60))
    await asyncio.sleep(0)
    try:
        await asyncio.wait_for(pool.close(timeout=0.1), 30)
        assert not pool.running
    finally:
        release.set()
    assert await stuck is True


@asyncio_test
async def test_close_twice_from_two_threads_is_safe(pool: SharedPool) -> None:
    assert await pool.run(workfns.square, 2) == 4
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(None, pool.close_sync, 1.0) for _ in range(2)))
    with pytest.raises(PoolClosed):
        await pool.run(workfns.square, 2)
