"""Deferred <-> asyncio with Twisted's asyncio reactor sharing the loop (pytest-twisted, --reactor=asyncio).

The same behaviours with the reactor in its own thread are checked in
test_reactor.py, which runs them in a child process with the default reactor.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
import traceback
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads
from twisted.python.failure import Failure

from bridge import as_deferred, as_future, async_api, deferred_api
from bridge.testing import asyncio_test

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


def later(value: Any, delay: float = 0.01) -> defer.Deferred[Any]:
    d: defer.Deferred[Any] = defer.Deferred()
    reactor.callLater(delay, d.callback, value)
    return d


def raise_deep() -> None:
    raise KeyError("deep inside Twisted")


def frames(exc: BaseException) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(exc.__traceback__)]


# ---------------------------------------------------------------- Deferred -> asyncio


@asyncio_test
async def test_as_future_waits_for_a_deferred_and_leaves_the_result_for_later_callbacks() -> None:
    d = later("face")
    assert await as_future(d) == "face"
    seen: list[str] = []
    d.addCallback(seen.append)
    assert seen == ["face"]


@asyncio_test
async def test_as_future_raises_the_original_exception_with_its_traceback() -> None:
    d = threads.deferToThread(raise_deep)
    with pytest.raises(KeyError, match="deep inside Twisted") as caught:
        await as_future(d)
    assert "raise_deep" in frames(caught.value)
    assert not isinstance(caught.value, Failure)
    rest: list[Any] = []
    d.addBoth(rest.append)
    assert rest == [None]  # the failure went to the future, not on down the chain


@asyncio_test
async def test_cancelling_the_awaiting_task_cancels_the_deferred() -> None:
    cancelled = asyncio.Event()
    d: defer.Deferred[Any] = defer.Deferred(lambda _: cancelled.set())

    async def awaits() -> Any:
        return await as_future(d)

    task = asyncio.ensure_future(awaits())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(cancelled.wait(), 30)
    assert d.called


@asyncio_test
async def test_cancelling_the_deferred_cancels_the_awaiting_task() -> None:
    d: defer.Deferred[Any] = defer.Deferred()
    task = asyncio.ensure_future(as_future(d))
    await asyncio.sleep(0)
    d.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


@asyncio_test
async def test_async_api_makes_a_deferred_function_awaitable_with_contextvars() -> None:
    @async_api
    def lookup(key: str) -> defer.Deferred[str]:
        return later(f"{key}:{request_id.get()}")

    request_id.set("r-1")
    assert await lookup("user") == "user:r-1"
    assert lookup.__name__ == "lookup"


# ---------------------------------------------------------------- asyncio -> Deferred


async def mixed_awaits() -> str:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()
    loop.call_later(0.01, fut.set_result, "asyncio")
    from_asyncio = await fut
    from_twisted = await later("twisted")
    from_thread = await threads.deferToThread(str.upper, "thread")
    return f"{from_asyncio}+{from_twisted}+{from_thread}+{request_id.get()}"


@pytest_twisted.inlineCallbacks
def test_a_coroutine_from_twisted_awaits_asyncio_futures_and_deferreds_alike() -> Any:
    request_id.set("r-2")
    result = yield as_deferred(mixed_awaits())
    assert result == "asyncio+twisted+THREAD+r-2"


@pytest_twisted.inlineCallbacks
def test_twisted_ensure_deferred_cannot_do_what_as_deferred_does() -> Any:
    """The trap this bridge exists for (Twisted #11841): shown, so the test fails if it ever goes away."""
    with pytest.raises(RuntimeError, match="await wasn't used with future"):
        yield defer.ensureDeferred(mixed_awaits())


@pytest_twisted.inlineCallbacks
def test_a_failing_coroutine_fails_its_deferred_with_the_original_traceback() -> Any:
    async def broken() -> None:
        await asyncio.sleep(0)
        raise_deep()

    with pytest.raises(KeyError) as caught:
        yield as_deferred(broken())
    assert {"broken", "raise_deep"} <= set(frames(caught.value))


@asyncio_test
async def test_a_deferred_failure_awaited_inside_the_task_is_raised_there() -> None:
    async def handles() -> str:
        try:
            await threads.deferToThread(raise_deep)
        except KeyError as exc:
            return f"handled {exc}"
        return "not raised"

    assert await as_future(as_deferred(handles())) == "handled 'deep inside Twisted'"


@asyncio_test
async def test_cancelling_the_deferred_cancels_the_task() -> None:
    started, finished = asyncio.Event(), asyncio.Event()
    outcome: list[str] = []

    async def long_job() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        finally:
            finished.set()

    d = as_deferred(long_job())
    await started.wait()
    d.cancel()
    await asyncio.wait_for(finished.wait(), 30)
    assert outcome == ["cancelled"]
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures[0].check(defer.CancelledError)


@asyncio_test
async def test_cancelling_the_deferred_cancels_a_deferred_the_task_awaits() -> None:
    inner_cancelled = asyncio.Event()
    inner: defer.Deferred[Any] = defer.Deferred(lambda _: inner_cancelled.set())
    started = asyncio.Event()

    async def waits_on_twisted() -> Any:
        started.set()
        return await inner

    outer = as_deferred(waits_on_twisted())
    await started.wait()
    outer.cancel()
    await asyncio.wait_for(inner_cancelled.wait(), 30)
    assert inner.called


@asyncio_test
async def test_cancelling_the_task_fails_the_deferred_with_cancelled_error() -> None:
    holder: list[asyncio.Task[Any]] = []
    started = asyncio.Event()

    async def job() -> None:
        holder.append(asyncio.current_task())  # type: ignore[arg-type]
        started.set()
        await asyncio.Event().wait()

    d = as_deferred(job())
    await started.wait()
    holder[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await as_future(d)


@asyncio_test
async def test_a_deferred_cancelled_before_its_task_starts_reports_nothing() -> None:
    """Twisted #12470: Deferred.fromFuture leaves an unhandled CancelledError here."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    ran: list[bool] = []

    async def never() -> None:
        ran.append(True)

    try:
        d = as_deferred(never())
        d.cancel()
        failures: list[Failure] = []
        d.addErrback(failures.append)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert failures[0].check(defer.CancelledError)
    assert ran == []
    assert reported == []


@pytest_twisted.inlineCallbacks
def test_deferred_api_exposes_an_async_function_to_twisted_with_contextvars() -> Any:
    @deferred_api
    async def detect(name: str) -> str:
        await asyncio.sleep(0)
        return f"{name}:{request_id.get()}"

    request_id.set("r-3")
    d = detect("faces")
    assert isinstance(d, defer.Deferred)
    assert (yield d) == "faces:r-3"
    assert detect.__name__ == "detect"


def test_as_future_and_as_deferred_reject_the_wrong_type() -> None:
    with pytest.raises(TypeError, match="takes a Deferred"):
        as_future(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes an awaitable"):
        as_deferred(42)  # type: ignore[arg-type]


class _TwistedErrors:
    """Collects what Twisted logs as unhandled errors while the block runs."""

    def __enter__(self) -> list[str]:
        from twisted.logger import globalLogPublisher

        self.seen: list[str] = []
        self._observer = lambda event: event.get("isError") and self.seen.append(str(event.get("log_failure")))
        globalLogPublisher.addObserver(self._observer)
        return self.seen

    def __exit__(self, *exc_info: object) -> None:
        from twisted.logger import globalLogPublisher

        gc.collect()
        globalLogPublisher.removeObserver(self._observer)


@asyncio_test
async def test_a_task_cancelled_after_its_deferred_failed_leaves_no_unhandled_error() -> None:
    started = asyncio.Event()
    box: list[defer.Deferred[Any]] = [defer.Deferred()]

    async def waits() -> Any:
        started.set()
        return await box[0]

    with _TwistedErrors() as seen:
        d = as_deferred(waits())
        await started.wait()
        box[0].errback(RuntimeError("boom"))
        d.cancel()
        d.addErrback(lambda failure: failure.trap(defer.CancelledError))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        box.clear()  # the last reference: an unhandled failure would be logged when it is collected
        del d
    assert seen == []


@asyncio_test
async def test_an_error_raised_while_cancelling_is_not_reported_as_lost() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    started, finished = asyncio.Event(), asyncio.Event()

    async def messy_cleanup() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ValueError("cleanup failed") from None
        finally:
            finished.set()

    try:
        d = as_deferred(messy_cleanup())
        await started.wait()
        d.cancel()
        d.addErrback(lambda failure: failure.trap(defer.CancelledError))
        await asyncio.wait_for(finished.wait(), 30)
        await asyncio.sleep(0)
        del d
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert reported == []


# ---------------------------------------------------------------- the same-loop fast path's edges


@asyncio_test
async def test_as_future_of_a_deferred_that_already_failed_raises_with_its_traceback() -> None:
    try:
        raise_deep()
    except KeyError:
        d: defer.Deferred[Any] = defer.fail()
    future = as_future(d)
    assert future.done()  # settled at once: nothing is left to cancel
    with pytest.raises(KeyError) as caught:
        await future
    assert "raise_deep" in frames(caught.value)
    rest: list[Any] = []
    d.addBoth(rest.append)
    assert rest == [None]  # reported once, by the awaiter, never as an unhandled error


@asyncio_test
async def test_cancelling_the_future_of_a_fired_deferred_changes_nothing() -> None:
    d = defer.succeed("kept")
    future = as_future(d, asyncio.get_running_loop())  # loop= naming the running loop takes the same path
    assert not future.cancel()
    assert await future == "kept"
    seen: list[str] = []
    d.addCallback(seen.append)
    assert seen == ["kept"]


@asyncio_test
async def test_as_future_settles_when_the_deferred_is_fired_from_another_thread() -> None:
    """Twisted forbids firing a Deferred off the reactor thread, yet code does it: the future still settles,
    on its own loop, not inline in the thread that fired it."""
    loop = asyncio.get_running_loop()
    settled_in: list[int] = []
    d: defer.Deferred[Any] = defer.Deferred()
    future = as_future(d)
    future.add_done_callback(lambda _: settled_in.append(threading.get_ident()))
    firing = threading.Thread(target=d.callback, args=("from a thread",))
    firing.start()
    assert await asyncio.wait_for(future, 30) == "from a thread"
    firing.join()
    await asyncio.sleep(0)
    assert settled_in == [threading.get_ident()]
    assert future.get_loop() is loop


def test_as_future_without_a_loop_says_so() -> None:
    errors: list[BaseException] = []

    def no_loop_here() -> None:  # a plain thread: no running loop, and no loop= given
        try:
            as_future(defer.Deferred())
        except BaseException as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)

    thread = threading.Thread(target=no_loop_here)
    thread.start()
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert "needs an asyncio loop" in str(errors[0])


@asyncio_test
async def test_as_deferred_runs_the_coroutine_in_a_copy_of_the_callers_context() -> None:
    async def reads_and_writes() -> str:
        seen = request_id.get()
        request_id.set("inside")
        return seen

    request_id.set("caller")
    assert await as_future(as_deferred(reads_and_writes())) == "caller"
    assert request_id.get() == "caller"  # the coroutine's own set stays in its copy


@asyncio_test
async def test_a_wait_for_timeout_cancels_the_deferred_at_once() -> None:
    cancelled: list[bool] = []
    d: defer.Deferred[Any] = defer.Deferred(lambda _: cancelled.append(True))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(as_future(d), 0.01)
    assert cancelled == [True]
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures == []  # the cancellation went to the future (already cancelled), not down the chain
