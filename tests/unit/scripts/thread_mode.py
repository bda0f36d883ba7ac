"""The default (epoll) reactor in its own thread, asyncio in the main thread: every hand-off crosses threads.

Run by tests/unit/test_reactor.py in a child process. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import sys
import threading
import traceback
from typing import Any

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


def thread() -> str:
    return threading.current_thread().name


def raise_deep() -> None:
    raise KeyError("deep")


async def main() -> dict[str, Any]:
    import bridge

    reactor_thread = bridge.run_reactor_in_thread()
    from twisted.internet import defer, protocol, reactor, threads

    out: dict[str, Any] = {"reactor": type(reactor).__name__}
    request_id.set("r-7")

    @bridge.async_api
    def twisted_lookup() -> defer.Deferred[list[str]]:
        d: defer.Deferred[list[str]] = defer.Deferred()
        reactor.callLater(0.01, d.callback, [thread(), request_id.get()])
        return d

    out["async_api"] = await asyncio.wait_for(twisted_lookup(), 30)

    async def on_the_loop() -> list[str]:
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, fut.set_result, thread())
        return [await fut, request_id.get()]

    @bridge.async_api
    def twisted_calls_a_coroutine() -> defer.Deferred[list[str]]:
        return bridge.as_deferred(on_the_loop())

    out["as_deferred"] = await asyncio.wait_for(twisted_calls_a_coroutine(), 30)

    @bridge.async_api
    def failing() -> defer.Deferred[None]:
        return threads.deferToThread(raise_deep)

    try:
        await failing()
    except KeyError as exc:
        out["error_frames"] = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]

    @bridge.async_api
    def raises_at_once() -> defer.Deferred[None]:
        raise LookupError(f"raised in {thread()}")

    try:
        await raises_at_once()
    except LookupError as exc:
        out["sync_raise"] = str(exc)

    # asyncio cancels -> the Deferred's canceller runs, in the reactor thread.
    loop = asyncio.get_running_loop()
    created, canceller_thread = asyncio.Event(), loop.create_future()

    @bridge.async_api
    def never() -> defer.Deferred[None]:
        loop.call_soon_threadsafe(created.set)
        return defer.Deferred(lambda _: loop.call_soon_threadsafe(canceller_thread.set_result, thread()))

    task = asyncio.ensure_future(never())
    await asyncio.wait_for(created.wait(), 30)
    task.cancel()
    out["canceller_thread"] = await asyncio.wait_for(canceller_thread, 30)

    # Twisted cancels the Deferred of a coroutine -> the task on the loop is cancelled.
    started, finished = asyncio.Event(), asyncio.Event()
    outcome: list[str] = []

    async def long_job() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append(thread())
            raise
        finally:
            finished.set()

    holder: list[defer.Deferred[None]] = []

    @bridge.async_api
    def start_job() -> defer.Deferred[None]:
        holder.append(bridge.as_deferred(long_job()))
        return defer.succeed(None)

    await start_job()
    await asyncio.wait_for(started.wait(), 30)
    def cancel_and_trap() -> None:
        holder[0].cancel()
        holder[0].addErrback(lambda failure: failure.trap(defer.CancelledError))

    reactor.callFromThread(cancel_and_trap)
    await asyncio.wait_for(finished.wait(), 30)
    out["task_cancelled_in"] = outcome

    # Children are reaped without Twisted's signal handlers.
    class Exit(protocol.ProcessProtocol):
        def __init__(self) -> None:
            self.ended: defer.Deferred[int] = defer.Deferred()

        def processEnded(self, reason: Any) -> None:
            self.ended.callback(reason.value.exitCode)

    @bridge.async_api
    def spawn() -> defer.Deferred[int]:
        child = Exit()
        reactor.spawnProcess(child, sys.executable, [sys.executable, "-c", "raise SystemExit(4)"])
        return child.ended

    out["child_exit_code"] = await asyncio.wait_for(spawn(), 30)

    reactor.callFromThread(reactor.stop)
    await asyncio.get_running_loop().run_in_executor(None, reactor_thread.join, 30)
    out["reactor_thread_stopped"] = not reactor_thread.is_alive()
    out["main_thread"] = thread()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
