"""Deferreds and asyncio futures, in both directions.

Two arrangements are supported, and every function here works in both:

* **shared loop**: Twisted's asyncio reactor runs on the asyncio loop
  (:func:`bridge.install_reactor`, or pytest-twisted with ``--reactor=asyncio``).
  Hand-offs are direct calls on the one thread.
* **reactor thread**: the reactor runs in a thread of its own
  (:func:`bridge.run_reactor_in_thread`). Deferreds are touched only in the
  reactor thread (``callFromThread``) and futures only in the loop thread
  (``call_soon_threadsafe``).

Rules that hold in both, by design:

* :func:`deferred_api` keeps ``inlineCallbacks`` semantics: the body starts at
  once, under Twisted's own driver, on any reactor and with no asyncio loop;
  it may still await asyncio futures when a loop runs them.

* A coroutine handed to :func:`as_deferred` runs as an asyncio ``Task``, not
  under Twisted's ``ensureDeferred``, so inside it ``await`` works on asyncio
  futures and Deferreds alike (Twisted #11841, pytest-twisted #163).
* Cancellation crosses both ways. Cancelling the asyncio side cancels the
  Deferred; a Deferred that fails with Twisted's ``CancelledError`` cancels the
  future (the awaiting task sees ``asyncio.CancelledError``), and cancelling a
  Deferred from :func:`as_deferred` cancels its task.
* Exceptions cross as themselves, with their original ``__traceback__``; a
  :class:`~twisted.python.failure.Failure` never reaches asyncio code.
* :func:`as_future` observes a Deferred rather than consuming its result:
  callbacks added later still see a success. A failure is handed to the future
  and the Deferred's chain continues with ``None``, so the error is reported
  once, by whoever awaits the future, not again as "Unhandled error in Deferred".
* contextvars set by the caller are visible inside the call.

The common case, a shared loop called from its own thread, takes a direct path
that pays only for what it uses: :func:`as_future` costs what Twisted's
``asFuture`` costs (less for a Deferred that has already fired: it has nothing
left to cancel), and :func:`as_deferred` of a coroutine what
``Deferred.fromFuture(ensure_future(coro))`` costs; the hand-offs between
threads are taken only when the caller is on another thread
(``bench/bridge.py`` measures each promise).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import CoroutineType
from typing import Any, Generic, ParamSpec, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python import threadable
from twisted.python.failure import Failure

__all__ = [
    "as_future", "as_deferred", "deferred_api", "async_api", "deferred_from_future", "maybe_awaitable",
    "set_bridge_loop",
]

T = TypeVar("T")
P = ParamSpec("P")

_bridge_loop: asyncio.AbstractEventLoop | None = None
_TwistedCancelled = defer.CancelledError


def set_bridge_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    """The asyncio loop that :func:`as_deferred` uses when called from a reactor thread with no loop."""
    global _bridge_loop
    _bridge_loop = loop


def _reactor() -> Any:
    # Imported late: importing it at module level would install the default reactor.
    from twisted.internet import reactor

    return reactor


def _in_reactor_thread() -> bool:
    """True when Deferreds may be touched here: in the reactor's thread, or with no reactor running."""
    io_thread = threadable.ioThread  # what threadable.isInIOThread compares, read without its helpers
    return io_thread is None or io_thread == threading.get_ident()


def _is_reactor_thread() -> bool:
    """True only in the thread of a reactor that has started."""
    return threadable.ioThread is not None and threadable.isInIOThread()


def _current_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _exception_of(failure: Failure) -> BaseException:
    exc = failure.value
    if exc.__traceback__ is None and failure.tb is not None:
        exc = exc.with_traceback(failure.tb)
    return exc


def _failure_of(exc: BaseException) -> Failure:
    return Failure(exc, type(exc), exc.__traceback__)


# ---------------------------------------------------------------- Deferred -> future


def _future_from(
    make: Callable[[], Deferred[T]], loop: asyncio.AbstractEventLoop, ctx: contextvars.Context
) -> asyncio.Future[T]:
    """A future on ``loop`` that follows the Deferred ``make()`` returns in the reactor thread."""
    future: asyncio.Future[T] = loop.create_future()
    deferreds: list[Deferred[T]] = []

    def settle(apply: Callable[[], Any]) -> None:
        settle_in(loop, apply)

    def on_result(result: T) -> T:
        settle(lambda: future.done() or future.set_result(result))
        return result

    def on_failure(failure: Failure) -> None:
        if failure.check(defer.CancelledError):
            settle(future.cancel)
        else:
            exc = _exception_of(failure)
            settle(lambda: future.done() or future.set_exception(exc))
        return None

    def attach() -> None:  # in the reactor thread
        if future.cancelled():
            return
        d = ctx.run(make)  # never raises: ``make`` returns a Deferred or uses maybeDeferred
        deferreds.append(d)
        d.addCallbacks(on_result, on_failure)

    def on_future_done(fut: asyncio.Future[T]) -> None:  # in the loop thread
        if fut.cancelled():
            in_reactor(lambda: [d.cancel() for d in deferreds if not d.called])

    future.add_done_callback(on_future_done)
    in_reactor(attach)
    return future


def in_reactor(fn: Callable[[], Any]) -> None:
    """Call ``fn`` in the reactor thread: now if this is it, else via ``callFromThread``."""
    if _in_reactor_thread():
        fn()
    else:
        _reactor().callFromThread(fn)


def as_future(d: Deferred[T], loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Future[T]:
    """An asyncio future for a Deferred; ``await as_future(d)`` from asyncio code.

    Cancelling the future (or the task awaiting it) cancels the Deferred.
    """
    if not isinstance(d, Deferred):
        raise TypeError(f"as_future() takes a Deferred, got {type(d).__name__}")
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    target = loop or running
    if target is None:
        raise RuntimeError("as_future() needs an asyncio loop: call it from a running loop or pass loop=")
    if target is running:
        home = threading.get_ident()
        io_thread = threadable.ioThread  # what _in_reactor_thread() reads, inlined on this hot path
        if io_thread is None or io_thread == home:
            return _future_here(d, target, home)
    # The Deferred already exists: nothing runs in the caller's context, so none is carried.
    return _future_from(lambda: d, target, _EMPTY_CONTEXT)


_EMPTY_CONTEXT = contextvars.Context()


def _future_here(d: Deferred[T], loop: asyncio.AbstractEventLoop, home: int) -> asyncio.Future[T]:
    """:func:`as_future` when the loop and the reactor share this thread: direct calls only.

    It pays for what Twisted's ``asFuture`` pays (a future, two callbacks and,
    while the Deferred has not fired, a done-callback for cancellation) and no
    more: the result is passed on down the chain rather than consumed, a
    failure is raised with its traceback, and a callback that fires from
    another thread (a Deferred fired outside the reactor, which Twisted
    forbids but which happens) still reaches the future through
    ``call_soon_threadsafe``.
    """
    future: _DeferredFuture[T] = _DeferredFuture(loop=loop)

    def on_result(result: T) -> T:
        if threading.get_ident() != home:
            loop.call_soon_threadsafe(_set_result, future, result)
        elif not future.done():
            future.set_result(result)
        return result

    def on_failure(failure: Failure) -> None:
        if threading.get_ident() != home:
            loop.call_soon_threadsafe(_fail, future, failure)
        elif not future.done():  # done: cancelled from asyncio, which cancelled this Deferred
            exc = failure.value  # what _fail does, inlined on this hot path
            if isinstance(exc, _TwistedCancelled):
                future.cancel()
            else:
                if exc.__traceback__ is None and failure.tb is not None:
                    exc = exc.with_traceback(failure.tb)
                future.set_exception(exc)
        return None

    d.addCallbacks(on_result, on_failure)
    if not future.done():  # a fired Deferred settled it already: nothing left to cancel
        future.deferred = d
    return future


class _DeferredFuture(asyncio.Future[T]):
    """The future of :func:`as_future`'s direct path: cancelling it cancels its Deferred at once, in
    this thread (the loop's and the reactor's), with no done-callback to schedule and run."""

    __slots__ = ("deferred",)

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        d = getattr(self, "deferred", None)
        if d is not None:
            self.deferred = None
            if not d.called:
                d.cancel()
        return True


def _fail(future: asyncio.Future[Any], failure: Failure) -> None:
    """Settle ``future`` with a Deferred's failure: Twisted's CancelledError cancels it."""
    if future.done():
        return
    if isinstance(failure.value, defer.CancelledError):
        future.cancel()
    else:
        future.set_exception(_exception_of(failure))


def _set_result(future: asyncio.Future[T], result: T) -> None:
    if not future.done():
        future.set_result(result)


def async_api(fn: Callable[P, Deferred[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Make a Deferred-returning function awaitable from asyncio.

    In reactor-thread mode the function itself is called in the reactor
    thread, where Twisted APIs may be used, with the caller's contextvars.
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        make = functools.partial(defer.maybeDeferred, fn, *args, **kwargs)
        return await _future_from(make, loop, contextvars.copy_context())

    return wrapper


# ---------------------------------------------------------------- awaitable -> Deferred


class _DeferredAwareCoroutine(Coroutine[Any, Any, T]):
    """Drives a coroutine for an asyncio Task so that ``await deferred`` works inside it.

    A Deferred awaited in a coroutine yields itself to whoever drives the
    coroutine; an asyncio Task refuses that ("Task got bad yield"). This driver
    hands the Task a future that completes when the Deferred has a result,
    without taking the result: when the Task resumes the coroutine, the
    Deferred's own ``__await__`` returns the value or raises the error.
    Cancelling the Task cancels the Deferred it waits on.
    """

    __slots__ = ("_coro", "_loop", "_awaiting")

    def __init__(self, coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop) -> None:
        self._coro, self._loop = coro, loop
        self._awaiting: Deferred[Any] | None = None

    def send(self, value: Any) -> Any:
        self._awaiting = None
        yielded = self._coro.send(value)
        if isinstance(yielded, Deferred):
            return self._translate(yielded)
        return yielded

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:  # type: ignore[override]
        exc = typ if isinstance(typ, BaseException) else (val if isinstance(val, BaseException) else typ())
        if self._awaiting is not None and isinstance(exc, asyncio.CancelledError):
            self._abandon(self._awaiting)
        self._awaiting = None
        return self._translate(self._coro.throw(exc))

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Any:
        return self

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def _abandon(self, d: Deferred[Any]) -> None:
        """The Task was cancelled while awaiting ``d``: cancel it, and absorb its outcome,
        which the coroutine will never read (it gets CancelledError instead)."""

        def cancel() -> None:
            if not d.called:
                d.cancel()
            d.addErrback(lambda _: None)

        in_reactor(cancel)

    def _translate(self, yielded: Any) -> Any:
        if not isinstance(yielded, Deferred):
            return yielded
        d = self._awaiting = yielded
        loop = self._loop
        waiter = loop.create_future()
        home = threading.get_ident()
        io_thread = threadable.ioThread
        if io_thread is None or io_thread == home:  # the reactor shares this thread: no hop either way

            def wake_here(result: Any) -> Any:
                if threading.get_ident() != home:  # fired outside the reactor thread, against Twisted's rules
                    loop.call_soon_threadsafe(_set_result, waiter, None)
                elif not waiter.done():
                    waiter.set_result(None)
                return result  # untouched: the coroutine reads it from the Deferred

            d.addBoth(wake_here)
        else:

            def wake(result: Any) -> Any:
                settle_in(loop, lambda: waiter.done() or waiter.set_result(None))
                return result

            in_reactor(lambda: d.addBoth(wake))
        waiter._asyncio_future_blocking = True
        return waiter


def settle_in(loop: asyncio.AbstractEventLoop, apply: Callable[[], Any]) -> None:
    """Call ``apply`` in ``loop``'s thread: now if this is it, else via ``call_soon_threadsafe``."""
    if _current_loop() is loop:
        apply()
    else:
        loop.call_soon_threadsafe(apply)



def _loop_for_deferred(loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    for candidate in (loop, _current_loop(), _bridge_loop):
        if candidate is not None:
            return candidate
    installed = sys.modules.get("twisted.internet.reactor")
    reactor_loop = getattr(installed, "_asyncioEventloop", None)
    if reactor_loop is not None:
        return reactor_loop
    raise RuntimeError(
        "as_deferred() needs an asyncio loop: call it from the loop's thread, pass loop=, "
        "or start the reactor with bridge.run_reactor_in_thread(loop)"
    )


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def as_deferred(awaitable: Awaitable[T] | Deferred[T], loop: asyncio.AbstractEventLoop | None = None) -> Deferred[T]:
    """A Deferred for a coroutine, task or future, run as an asyncio Task.

    ``Deferred.cancel()`` cancels the task; the task's exception is the
    Deferred's failure, with the original traceback. A Deferred passes through.
    """
    if loop is None and type(awaitable) is CoroutineType:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            # The common case: a coroutine, on this loop. The Task copies this context itself.
            return _deferred_for_task(running.create_task(_DeferredAwareCoroutine(awaitable, running)), running)
    if isinstance(awaitable, Deferred):
        return awaitable
    if not inspect.isawaitable(awaitable):
        raise TypeError(f"as_deferred() takes an awaitable, got {type(awaitable).__name__}")
    target = _loop_for_deferred(loop)
    ctx = contextvars.copy_context()
    if inspect.iscoroutine(awaitable):
        awaitable = _DeferredAwareCoroutine(awaitable, target)
    elif _current_loop() is not target:
        awaitable = _DeferredAwareCoroutine(_await(awaitable), target)

    if _current_loop() is target:
        task: asyncio.Future[T] | concurrent.futures.Future[T] = ctx.run(asyncio.ensure_future, awaitable, loop=target)
    else:
        # The task is created in the loop's thread from a callback that carries this context.
        task = ctx.run(asyncio.run_coroutine_threadsafe, awaitable, target)
    return _deferred_for_task(task, target)


def _deferred_for_task(task: asyncio.Future[T] | concurrent.futures.Future[T],
                       loop: asyncio.AbstractEventLoop) -> Deferred[T]:
    """A Deferred that follows ``task`` (fired in the reactor thread); cancelling it cancels the task."""

    def cancel(_: Deferred[T]) -> None:
        if isinstance(task, concurrent.futures.Future):
            task.cancel()  # thread-safe
        else:
            settle_in(loop, task.cancel)

    d: Deferred[T] = Deferred(cancel)

    def deliver(fut: Any) -> None:
        if d.called:  # the Deferred was cancelled first and has already failed
            if not fut.cancelled():
                fut.exception()  # retrieved, so asyncio does not report it as lost
            return
        _fire(d, fut)

    if isinstance(task, asyncio.Future) and _in_reactor_thread():
        # Its done-callbacks run in this thread, the loop's, which is the reactor's too: no hop.
        task.add_done_callback(deliver)
        return d

    def on_done(fut: Any) -> None:
        if _in_reactor_thread():
            deliver(fut)
        else:
            _reactor().callFromThread(deliver, fut)

    task.add_done_callback(on_done)
    return d


def _fire(d: Deferred[T], fut: asyncio.Future[T] | concurrent.futures.Future[T]) -> None:
    """Fire ``d`` with the outcome of the done future ``fut``: its result, its exception (with the original
    traceback), or Twisted's CancelledError."""
    if fut.cancelled():
        d.errback(Failure(defer.CancelledError()))
        return
    exc = fut.exception()
    if exc is not None:
        d.errback(_failure_of(exc))
    else:
        d.callback(fut.result())


def _is_asyncio_future(value: Any) -> bool:
    """An asyncio future (or Task) that a coroutine yielded while awaiting it."""
    return asyncio.isfuture(value)


def _deferred_for_future(future: asyncio.Future[Any]) -> Deferred[None]:
    """A Deferred that fires with None, in the reactor thread, once ``future`` is done.

    It does not take the future's outcome: the coroutine that awaits the future
    reads it when resumed. Cancelling the Deferred cancels the future.
    """
    loop = future.get_loop()

    def cancel(_: Deferred[None]) -> None:
        settle_in(loop, future.cancel)

    d: Deferred[None] = Deferred(cancel)

    def fire() -> None:
        if not d.called:
            d.callback(None)

    future.add_done_callback(lambda _: in_reactor(fire))
    return d


_driving = threading.local()  # depth > 0 while a deferred_api body runs in this thread


def _eager(coro: Coroutine[Any, Any, T]) -> Generator[Any, Any, T]:
    """Drive ``coro`` for Twisted's inlineCallbacks machinery, bridging asyncio futures.

    Deferreds and everything else the coroutine yields go to Twisted unchanged;
    an asyncio future (``await`` of a future or Task, on the asyncio reactor or a
    loop of its own) is handed over as a Deferred that fires when it is done,
    which Twisted's own driver refuses ("await wasn't used with future").
    """
    step: Callable[[Any], Any] = coro.send
    value: Any = None
    while True:
        _driving.depth = getattr(_driving, "depth", 0) + 1
        try:
            yielded = step(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        finally:
            _driving.depth -= 1
        try:
            value = yield (_deferred_for_future(yielded) if _is_asyncio_future(yielded) else yielded)
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # thrown in by Twisted: the awaited Deferred failed or was cancelled
            step, value = coro.throw, exc
        else:
            step = coro.send


def deferred_api(fn: Callable[P, Awaitable[T]]) -> Callable[P, Deferred[T]]:
    """Make an ``async def`` callable from Twisted code as a Deferred-returning function.

    It keeps ``inlineCallbacks`` semantics, on any reactor, with no asyncio loop
    needed: the body runs at once, in the caller's stack, up to its first
    ``await`` of something not yet done, and the call returns a Deferred. Twisted's
    machinery drives it (``Deferred.fromCoroutine``), so cancelling the Deferred
    cancels what the body awaits, contextvars are copied at the call, and errors
    keep their tracebacks. The body may also await asyncio futures and tasks
    when an asyncio loop runs them (the asyncio reactor, or a loop in another
    thread). The body is not an asyncio Task: code that needs one
    (``asyncio.timeout``, ``TaskGroup``) goes behind :func:`as_deferred`.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        awaitable = fn(*args, **kwargs)
        if inspect.iscoroutine(awaitable):
            return Deferred.fromCoroutine(_eager(awaitable))
        return as_deferred(awaitable)

    return wrapper


class _Ready(Generic[T]):
    """An awaitable that gives its value at once, without suspending."""

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    def __await__(self) -> Generator[Any, Any, T]:
        return self._value
        yield  # a generator, never reached


class _Yielded(Generic[T]):
    """``yield d`` of an inlineCallbacks generator, as an awaitable for a coroutine that Twisted drives.

    It hands the Deferred to Twisted's driver and returns what the driver sends
    back (or raises what it throws in): the result as the Deferred's callback
    chain had it, exactly what the generator got, including for Deferreds that
    Twisted's own ``Deferred.__await__`` trips over.
    """

    __slots__ = ("_d",)

    def __init__(self, d: Deferred[T]) -> None:
        self._d = d

    def __await__(self) -> Generator[Any, Any, T]:
        return (yield self._d)  # type: ignore[no-any-return]


class _Raise:
    """A yielded Failure: inlineCallbacks threw it into the generator."""

    __slots__ = ("_failure",)

    def __init__(self, failure: Failure) -> None:
        self._failure = failure

    def __await__(self) -> Generator[Any, Any, Any]:
        self._failure.raiseException()
        yield  # a generator, never reached


def maybe_awaitable(value: Awaitable[T] | T) -> Awaitable[T]:
    """``await maybe_awaitable(x)`` does what ``yield x`` did in ``inlineCallbacks``, whatever ``x`` is.

    A Deferred is waited for, a coroutine or future awaited, a Failure raised,
    and anything else (None, a plain value, a Mock) given back at once, where
    ``await x`` would raise ``TypeError``. The codemod writes it where it cannot
    tell what a ``yield`` gets (``port.stopListening()`` returns a Deferred or
    None); drop it once the type is known. A Deferred awaited from an asyncio
    Task (not from a :func:`deferred_api` body) goes through :func:`as_future`,
    so the helper suits both targets of the codemod.
    """
    if isinstance(value, Deferred):
        if not getattr(_driving, "depth", 0) and _current_loop() is not None and asyncio.current_task() is not None:
            return as_future(value)
        return _Yielded(value)
    if isinstance(value, Failure):
        return _Raise(value)  # type: ignore[return-value]
    if inspect.isawaitable(value):
        return value
    return _Ready(value)  # type: ignore[arg-type]


def deferred_from_future(future: concurrent.futures.Future[T]) -> Deferred[T]:
    """A Deferred for a ``concurrent.futures.Future`` settled in any thread.

    The result is delivered in the reactor thread; ``Deferred.cancel()``
    cancels the future (for pool calls, that cancels the call).
    """
    d: Deferred[T] = Deferred(lambda _: future.cancel())

    def deliver(fut: concurrent.futures.Future[T]) -> None:
        if not d.called:
            _fire(d, fut)

    def on_done(fut: concurrent.futures.Future[T]) -> None:
        # Settled in any thread (the pool's dispatcher, a caller cancelling):
        # Deferred callbacks run only in the reactor thread, queued there if it
        # has not started yet, never inline on the thread that settled the future.
        if _is_reactor_thread():
            deliver(fut)
        else:
            _reactor().callFromThread(deliver, fut)

    future.add_done_callback(on_done)
    return d
