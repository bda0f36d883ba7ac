"""Twisted's reactor installed by bridge.install_reactor on a loop that asyncio.run owns.

Run by tests/unit/test_reactor.py in a child process (a process gets one reactor). Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading


async def main() -> dict[str, object]:
    import bridge

    reactor = bridge.install_reactor()
    out: dict[str, object] = {
        "reactor": type(reactor).__name__,
        "idempotent": bridge.install_reactor() is reactor,
        "running": reactor.running,
    }
    from twisted.internet import defer, protocol, threads

    # The reactor's thread pool started: deferToThread answers instead of hanging.
    thread_name = await asyncio.wait_for(
        bridge.as_future(threads.deferToThread(lambda: threading.current_thread().name)), 30
    )
    out["deferToThread_ran_in_other_thread"] = thread_name != threading.current_thread().name

    # A spawned child is reaped without Twisted's SIGCHLD handler, so processEnded fires.
    class Exit(protocol.ProcessProtocol):
        def __init__(self) -> None:
            self.ended: defer.Deferred[int] = defer.Deferred()

        def processEnded(self, reason: object) -> None:
            self.ended.callback(reason.value.exitCode)  # type: ignore[attr-defined]

    child = Exit()
    reactor.spawnProcess(child, sys.executable, [sys.executable, "-c", "raise SystemExit(3)"])
    out["child_exit_code"] = await asyncio.wait_for(bridge.as_future(child.ended), 30)

    # Cancellation both ways with the reactor on this loop.
    cancelled = asyncio.Event()
    d: defer.Deferred[None] = defer.Deferred(lambda _: cancelled.set())
    waiter = asyncio.ensure_future(bridge.as_future(d))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.wait_for(cancelled.wait(), 30)
    out["task_cancel_reached_deferred"] = True

    started, finished = asyncio.Event(), asyncio.Event()

    async def job() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            finished.set()

    from_task = bridge.as_deferred(job())
    await started.wait()
    from_task.cancel()
    from_task.addErrback(lambda failure: failure.trap(defer.CancelledError))
    await asyncio.wait_for(finished.wait(), 30)
    out["deferred_cancel_reached_task"] = True

    await bridge.stop_reactor()
    out["loop_alive_after_stop"] = asyncio.get_running_loop().is_running()
    out["reactor_running_after_stop"] = reactor.running
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
