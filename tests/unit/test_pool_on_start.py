"""``on_start``: the pool says when a worker begins a call, so a job runner knows which jobs were executing.

The contract (bridge.jobs relies on it): called once, on the caller's loop for
``run`` and ``defer``, when a worker takes the call and before its result
arrives; never for a call that never started.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from bridge import SharedPool, as_future
from bridge.testing import asyncio_test
from tests import workfns
from tests.conftest import WAIT, Gate, until


@asyncio_test
async def test_on_start_is_called_once_on_the_loop_before_the_result(pool: SharedPool) -> None:
    calls: list[tuple[int, bool]] = []
    done = False

    def started() -> None:
        calls.append((threading.get_ident(), done))

    assert await pool.run(workfns.square, 7, on_start=started) == 49
    done = True
    assert calls == [(threading.get_ident(), False)]
    assert await as_future(pool.defer(workfns.square, 3, on_start=started)) == 9
    assert calls[1:] == [(threading.get_ident(), True)]


@asyncio_test
async def test_a_call_cancelled_in_the_queue_never_reports_a_start(pool: SharedPool, tmp_path: Path) -> None:
    gates = [Gate(tmp_path, f"gate{i}") for i in range(pool.processes)]
    busy = [asyncio.ensure_future(pool.run(workfns.wait_at_gate, g.started, g.gate, i)) for i, g in enumerate(gates)]
    for g in gates:
        await g.wait_started()  # every worker is taken: the next call waits in the queue
    reported: list[str] = []
    queued = asyncio.ensure_future(pool.run(workfns.square, 2, on_start=lambda: reported.append("queued")))
    await until(lambda: pool.stats().queued == 1, "the call to wait in the pool's queue")
    cancelled = pool.stats().cancelled
    queued.cancel()
    # The cancellation reaches the pool a few loop turns later: open the gates only once it has dropped the call.
    await until(lambda: pool.stats().cancelled > cancelled and pool.stats().queued == 0, "the pool to drop the call")
    for g in gates:
        await g.open()
    assert await asyncio.wait_for(asyncio.gather(*busy), WAIT) == list(range(pool.processes))
    # Starts are handed to the loop before results, from the same thread: had it started, we would know now.
    assert await pool.run(workfns.square, 3, on_start=lambda: reported.append("after")) == 9
    assert reported == ["after"]


@asyncio_test
async def test_submit_reports_the_start_from_the_pools_dispatch_thread(pool: SharedPool) -> None:
    # The pool dispatches on the loop that started it (this test's), so that is where submit's on_start runs, once.
    seen: list[int] = []
    future = pool.submit(workfns.square, 5, on_start=lambda: seen.append(threading.get_ident()))
    assert await asyncio.wait_for(asyncio.wrap_future(future), WAIT) == 25
    assert seen == [threading.get_ident()]
