"""What ``SharedPool.run`` returns on the pool's loop: a future that cancels its call, taken wherever a
coroutine was (``create_task``, ``TaskGroup``), and calls that travel with their function's kept pickle."""

from __future__ import annotations

import asyncio
import functools
import os
from pathlib import Path

import pytest

from bridge import PoolBusy, PoolClosed, SerializationError, SharedPool
from bridge.pool import CallFuture
from bridge.testing import asyncio_test
from tests import workfns
from tests.conftest import Gate
from tests.unit import poolfns


@asyncio_test
async def test_run_gives_a_future_that_create_task_and_task_groups_take(pool: SharedPool) -> None:
    call = pool.run(workfns.square, 5)
    assert isinstance(call, CallFuture)
    assert await asyncio.create_task(call) == 25
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(pool.run(workfns.square, i)) for i in range(6)]
    assert [t.result() for t in tasks] == [i * i for i in range(6)]
    assert await asyncio.wait_for(pool.run(workfns.square, 7), 30) == 49


@asyncio_test
async def test_cancelling_a_task_made_from_run_cancels_the_call(tmp_path: Path, gate: Gate) -> None:
    async with SharedPool(processes=1, cpus=2) as pool:
        blocker = asyncio.create_task(pool.run(workfns.wait_at_gate, gate.started, gate.gate, "done"))
        pid = await gate.wait_started()
        doomed = asyncio.create_task(pool.run(poolfns.record, str(tmp_path), "doomed"))
        await asyncio.sleep(0)  # the task starts awaiting the call's future
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await gate.open()
        assert await blocker == "done"
        assert await pool.run(poolfns.record, str(tmp_path), "after") == pid  # no worker was killed
        assert poolfns.runs(str(tmp_path), "doomed") == []
        assert pool.stats().cancelled == 1


@asyncio_test
async def test_refusals_are_raised_where_the_call_is_awaited(gate: Gate) -> None:
    async with SharedPool(processes=1, cpus=2, max_queued=1) as pool:
        blocker = pool.run(workfns.wait_at_gate, gate.started, gate.gate, "done")
        await gate.wait_started()
        queued = pool.run(workfns.square, 2)
        refused = pool.run(workfns.square, 3, block=False)  # no exception here: it is in the future
        unpicklable = pool.run(workfns.square, lambda: 1)
        bad_timeout = pool.run(workfns.square, 4, timeout=0)
        with pytest.raises(PoolBusy):
            await refused
        with pytest.raises(SerializationError):
            await unpicklable
        with pytest.raises(ValueError, match="timeout must be positive"):
            await bad_timeout
        await gate.open()
        assert (await blocker, await queued) == ("done", 4)
    with pytest.raises(PoolClosed):
        await pool.run(workfns.square, 5)


@asyncio_test
async def test_a_callable_with_state_travels_with_its_state_at_each_call(pool: SharedPool) -> None:
    """Functions are pickled once and kept; objects that carry state never are."""
    scaled = poolfns.Scaled(2)
    assert await pool.run(scaled, 10) == 20
    scaled.factor = 3
    assert await pool.run(scaled, 10) == 30
    assert await pool.run(functools.partial(workfns.square), 4) == 16
    assert await asyncio.gather(*(pool.run(workfns.square, i) for i in range(50))) == [i * i for i in range(50)]
    assert await pool.run(len, b"abc") == 3  # a builtin, kept by name too


@asyncio_test
async def test_large_arguments_travel_apart_and_arrive_as_what_was_sent(pool: SharedPool) -> None:
    """bytes of 64 KiB and more go as out-of-band buffers; order, types and contents must not change."""
    first, second = b"A" * 70_000, os.urandom(1_000_000)
    mutable = bytearray(b"M" * 80_000)
    described = await pool.run(poolfns.describe, first, b"tiny", second, mutable, blob=b"K" * 90_000)
    assert described == [
        ("bytes", 70_000, b"AAAA"), ("bytes", 4, b"tiny"), ("bytes", 1_000_000, second[:4]),
        ("bytearray", 80_000, b"MMMM"), ("bytes", 90_000, b"KKKK"),
    ]
    echoed = await pool.run(poolfns.echo, second)
    assert type(echoed) is bytes and echoed == second  # a large bytes result comes back unpickled, as bytes
    assert await pool.run(poolfns.echo, mutable) == mutable
    stats = pool.stats()
    assert (stats.queued, stats.prefetched, stats.failed) == (0, 0, 0)
