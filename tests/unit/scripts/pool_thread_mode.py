"""The pool on the asyncio loop, Twisted's default reactor in its own thread: pool.defer crosses threads.

Run by tests/unit/test_pool_threads.py in a child process. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests import workfns  # noqa: E402
from tests.conftest import Gate  # noqa: E402


def thread() -> str:
    return threading.current_thread().name


async def main() -> dict[str, Any]:
    import bridge

    out: dict[str, Any] = {}
    async with bridge.SharedPool(processes=1, cpus=2) as pool:
        reactor_thread = bridge.run_reactor_in_thread()
        from twisted.internet import defer, reactor

        loop = asyncio.get_running_loop()

        def in_reactor(fn: Any) -> asyncio.Future[Any]:
            """Run fn() in the reactor thread; its Deferred's outcome (and the thread it came in) on the loop."""
            done: asyncio.Future[Any] = loop.create_future()

            def start() -> None:
                d = fn()
                d.addBoth(lambda value: loop.call_soon_threadsafe(done.set_result, (value, thread())))

            reactor.callFromThread(start)
            return done

        started_in: list[str] = []
        value, delivered_in = await asyncio.wait_for(in_reactor(
            lambda: pool.defer(workfns.add, 2, 5, scale=3, on_start=lambda: started_in.append(thread()))), 60)
        out["defer"] = [value, delivered_in, started_in]

        failure, _ = await asyncio.wait_for(in_reactor(lambda: pool.defer(workfns.fail_with, "nope")), 60)
        out["failure"] = [type(failure.value).__name__, str(failure.value)]

        with tempfile.TemporaryDirectory() as tmp:
            gate = Gate(Path(tmp))
            holder: list[defer.Deferred[Any]] = []
            outcome = in_reactor(lambda: holder.append(pool.defer(workfns.wait_at_gate, gate.started, gate.gate))
                                 or holder[0])
            pid = int(await loop.run_in_executor(None, Path(gate.started).read_text))
            reactor.callFromThread(holder[0].cancel)
            failure, _ = await asyncio.wait_for(outcome, 60)
            out["cancelled"] = failure.check(defer.CancelledError) is not None
            fd = os.pidfd_open(pid)
            gone = loop.create_future()
            loop.add_reader(fd, lambda: gone.done() or gone.set_result(None))
            await asyncio.wait_for(gone, 60)
            loop.remove_reader(fd)
            os.close(fd)
            out["worker_killed"] = True
        out["after"] = await pool.run(workfns.square, 7)
        out["stats"] = {k: v for k, v in pool.stats().as_dict().items() if k in ("completed", "failed", "cancelled")}
        reactor.callFromThread(reactor.stop)
        await loop.run_in_executor(None, reactor_thread.join, 30)
    out["main_thread"] = thread()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
