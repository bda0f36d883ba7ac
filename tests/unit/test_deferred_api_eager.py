"""``deferred_api`` keeps inlineCallbacks semantics: eager start, a Deferred at once, any reactor.

The suite runs on Twisted's asyncio reactor; the default-reactor case runs in a
child process that installs nothing but Twisted's default reactor.
"""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import textwrap
import traceback
from typing import Any
from unittest import mock

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.python.failure import Failure

from bridge import deferred_api, maybe_awaitable
from bridge.testing import asyncio_test

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def test_the_body_runs_at_once_up_to_the_first_unfired_deferred() -> None:
    gate: defer.Deferred[int] = defer.Deferred()
    steps: list[str] = []

    @deferred_api
    async def setup() -> int:
        steps.append("start")
        await defer.succeed(None)  # fired: no suspension, as with inlineCallbacks
        steps.append("after fired")
        value = await gate
        steps.append("after gate")
        return value + 1

    d = setup()
    assert isinstance(d, defer.Deferred)
    assert steps == ["start", "after fired"]  # before any reactor turn
    assert not d.called
    gate.callback(41)
    assert steps == ["start", "after fired", "after gate"]
    assert d.result == 42


def test_a_body_that_never_waits_has_fired_when_the_call_returns() -> None:
    class Service:
        ready = False

        @deferred_api
        async def start(self) -> str:
            self.ready = True
            return "up"

    service = Service()
    d = service.start()
    assert service.ready is True
    assert d.called and d.result == "up"


def test_cancelling_the_deferred_cancels_what_the_body_awaits() -> None:
    cancelled: list[bool] = []
    inner: defer.Deferred[None] = defer.Deferred(lambda _: cancelled.append(True))
    seen: list[BaseException] = []

    @deferred_api
    async def wait() -> None:
        try:
            await inner
        except defer.CancelledError as exc:
            seen.append(exc)
            raise

    d = wait()
    d.cancel()
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert cancelled == [True]
    assert len(seen) == 1
    assert failures and failures[0].check(defer.CancelledError)


def test_errors_keep_their_traceback_through_the_deferred() -> None:
    gate: defer.Deferred[None] = defer.Deferred()

    @deferred_api
    async def broken() -> None:
        await gate
        raise ValueError("bad input")

    d = broken()
    gate.callback(None)
    failures: list[Failure] = []
    d.addErrback(failures.append)
    exc = failures[0].value
    assert isinstance(exc, ValueError)
    frames = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
    assert "broken" in frames


def test_contextvars_of_the_caller_are_seen_and_changes_stay_inside() -> None:
    gate: defer.Deferred[None] = defer.Deferred()
    seen: list[str] = []

    @deferred_api
    async def handler() -> None:
        seen.append(request_id.get())
        request_id.set("inner")
        await gate
        seen.append(request_id.get())

    token = request_id.set("r-7")
    try:
        handler()
        gate.callback(None)
        assert request_id.get() == "r-7"
    finally:
        request_id.reset(token)
    assert seen == ["r-7", "inner"]


def test_a_patch_decorator_above_covers_the_body_as_it_covered_the_generator() -> None:
    """mock.patch is undone when the call returns: before the first wait the body sees the patch, after it not,
    exactly as with inlineCallbacks (the old delayed start saw no patch at all)."""
    import os

    def run(decorate: Any, gate: defer.Deferred[None]) -> list[str]:
        seen: list[str] = []

        @mock.patch("os.getcwd", return_value="/patched")
        @decorate
        def check(getcwd: Any) -> Any:
            seen.append(os.getcwd())
            yield gate
            seen.append(os.getcwd())

        @mock.patch("os.getcwd", return_value="/patched")
        @deferred_api
        async def converted(getcwd: Any) -> None:
            seen.append(os.getcwd())
            await gate
            seen.append(os.getcwd())

        (check if decorate is defer.inlineCallbacks else converted)()
        gate.callback(None)
        return seen

    before = run(defer.inlineCallbacks, defer.Deferred())
    after = run(deferred_api, defer.Deferred())
    assert before == after == ["/patched", os.getcwd()]


@pytest_twisted.inlineCallbacks
def test_the_body_awaits_asyncio_futures_and_tasks_on_the_asyncio_reactor() -> Any:
    @deferred_api
    async def mixed() -> list[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        loop.call_soon(future.set_result, "future")
        got = [await future]
        got.append(await asyncio.ensure_future(asyncio.sleep(0.001, "task")))
        got.append(await defer.succeed("deferred"))
        return got

    assert (yield mixed()) == ["future", "task", "deferred"]


@pytest_twisted.inlineCallbacks
def test_cancelling_while_awaiting_an_asyncio_future_cancels_the_future() -> Any:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    @deferred_api
    async def wait() -> None:
        await future

    d = wait()
    d.cancel()
    failures: list[Failure] = []
    d.addErrback(failures.append)
    yield defer.succeed(None)
    assert failures and failures[0].check(defer.CancelledError)
    for _ in range(100):  # the cancel reaches the future through the loop
        if future.cancelled():
            break
        yield maybe_awaitable_sleep()
    assert future.cancelled()


def maybe_awaitable_sleep() -> defer.Deferred[None]:
    return defer.Deferred.fromFuture(asyncio.ensure_future(asyncio.sleep(0.001)))


def test_deferred_api_still_passes_a_non_coroutine_awaitable_through_as_deferred() -> None:
    ready: defer.Deferred[int] = defer.succeed(5)

    @deferred_api
    def plain() -> defer.Deferred[int]:  # type: ignore[misc]
        return ready

    assert plain() is ready


@pytest.mark.parametrize("value", [None, 3, "text", mock.Mock(), object()])
def test_maybe_awaitable_passes_values_that_are_not_awaitable_through(value: Any) -> None:
    @deferred_api
    async def body() -> Any:
        return await maybe_awaitable(value)

    d = body()
    assert d.called and d.result is value


def test_maybe_awaitable_raises_a_failure_as_inlinecallbacks_threw_it_in() -> None:
    def old() -> Any:
        try:
            yield Failure(ValueError("thrown in"))
        except ValueError as exc:
            return f"caught {exc}"

    @deferred_api
    async def new() -> str:
        try:
            await maybe_awaitable(Failure(ValueError("thrown in")))
        except ValueError as exc:
            return f"caught {exc}"
        return "not raised"

    assert defer.inlineCallbacks(old)().result == new().result == "caught thrown in"


def test_maybe_awaitable_takes_the_result_as_the_callback_chain_has_it() -> None:
    """A Deferred called back with a Failure object: inlineCallbacks threw it in, Deferred.__await__ asserts."""
    odd: defer.Deferred[Any] = defer.Deferred()

    @deferred_api
    async def body() -> str:
        try:
            await maybe_awaitable(odd)
        except KeyError:
            return "raised"
        return "returned"

    d = body()
    odd.callback(Failure(KeyError("k")))
    assert d.result == "raised"


def test_maybe_awaitable_awaits_deferreds_and_coroutines() -> None:
    gate: defer.Deferred[str] = defer.Deferred()

    async def inner() -> str:
        return "coro"

    @deferred_api
    async def body() -> list[str]:
        return [await maybe_awaitable(gate), await maybe_awaitable(inner())]

    d = body()
    assert not d.called
    gate.callback("deferred")
    assert d.result == ["deferred", "coro"]


def test_await_of_a_plain_value_still_raises_without_the_helper() -> None:
    @deferred_api
    async def body() -> None:
        await None  # type: ignore[misc]

    failures: list[Failure] = []
    body().addErrback(failures.append)
    assert failures[0].check(TypeError)


DEFAULT_REACTOR_CHILD = textwrap.dedent(
    """
    import sys
    from twisted.internet import reactor, task, defer
    from twisted.internet.selectreactor import SelectReactor
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor
    from bridge import deferred_api, maybe_awaitable

    assert not isinstance(reactor, AsyncioSelectorReactor), type(reactor)
    steps = []

    @deferred_api
    async def work(n):
        steps.append("started")
        await task.deferLater(reactor, 0.01)
        port = await maybe_awaitable(None)
        return n * 2 if port is None else -1

    def main(reactor):
        d = work(21)
        assert steps == ["started"], steps
        return d.addCallback(lambda v: print("RESULT", v, type(reactor).__name__))

    task.react(main)
    """
)


@pytest.mark.subprocess
def test_converted_code_runs_on_twisteds_default_reactor_without_asyncio() -> None:
    child = subprocess.run([sys.executable, "-c", DEFAULT_REACTOR_CHILD], capture_output=True, text=True,
                           timeout=60)
    assert child.returncode == 0, child.stderr
    assert "RESULT 42" in child.stdout
    assert "Asyncio" not in child.stdout.split("RESULT 42", 1)[1]


@asyncio_test
async def test_maybe_awaitable_hands_a_deferred_to_an_asyncio_task_as_a_future() -> None:
    async def in_task(d: defer.Deferred[str]) -> str:
        return await maybe_awaitable(d)

    d: defer.Deferred[str] = defer.Deferred()
    task = asyncio.ensure_future(in_task(d))
    await asyncio.sleep(0)
    assert not task.done()
    d.callback("through as_future")
    assert await task == "through as_future"
    assert await asyncio.ensure_future(in_task(defer.succeed("fired"))) == "fired"


@asyncio_test
async def test_a_deferred_api_body_called_from_a_task_still_awaits_deferreds_at_once() -> None:
    gate: defer.Deferred[str] = defer.Deferred()

    @deferred_api
    async def body() -> str:
        return await maybe_awaitable(gate)

    async def caller() -> defer.Deferred[str]:
        return body()

    d = await asyncio.ensure_future(caller())
    gate.callback("sync")
    assert d.called and d.result == "sync"  # resumed in the callback, no loop turn
