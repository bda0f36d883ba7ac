"""Deferred <-> asyncio hand-off cost: the bridge vs Twisted's own adapters, promise by promise.

Runs with Twisted's asyncio reactor on the running loop (``bridge.install_reactor``),
the shared-loop arrangement, so both sides are direct calls on one thread:

* Deferred -> asyncio: ``await bridge.as_future(d)`` vs ``await d.asFuture(loop)``,
  for a Deferred that has already fired, one fired on a later loop turn, one
  that fails on a later turn (the traceback promise), and a future cancelled
  before the Deferred fires (cancellation, asyncio -> Twisted);
* asyncio -> Deferred: ``bridge.as_deferred(coro)`` vs
  ``Deferred.fromFuture(asyncio.ensure_future(coro))``, timed until the
  Deferred fires (both observed the same way: a callback resolving a loop
  future), for a coroutine that returns at once, one that fails, and one that
  awaits a Deferred (ours awaits it directly; Twisted's needs ``d.asFuture(loop)``);
* cross-thread: ``as_future`` from a second loop in another thread, the
  Deferred living in the reactor's thread; Twisted has no adapter for it, so
  its row compares with the same Deferred awaited on the reactor's loop.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import bridge as cutover_bridge

from .report import median, report

NAME = "bridge"
N = 20_000
WARMUP = 2_000
REPEATS = 5
YIELD_EVERY = 100


async def _value(i: int) -> int:
    return i


Case = tuple[str, str, str, Callable[[int], Awaitable[Any]], Callable[[int], Awaitable[Any]]]


class _Boom(Exception):
    pass


def _cases(loop: asyncio.AbstractEventLoop) -> list[Case]:
    from twisted.internet.defer import CancelledError, Deferred, succeed

    as_future, as_deferred = cutover_bridge.as_future, cutover_bridge.as_deferred

    async def fired_ours(i: int) -> Any:
        return await as_future(succeed(i))

    async def fired_twisted(i: int) -> Any:
        return await succeed(i).asFuture(loop)

    async def later_ours(i: int) -> Any:
        d: Deferred[int] = Deferred()
        loop.call_soon(d.callback, i)
        return await as_future(d)

    async def later_twisted(i: int) -> Any:
        d: Deferred[int] = Deferred()
        loop.call_soon(d.callback, i)
        return await d.asFuture(loop)

    async def fails_ours(i: int) -> Any:
        d: Deferred[int] = Deferred()
        loop.call_soon(d.errback, _Boom(i))
        try:
            await as_future(d)
        except _Boom:
            return i

    async def fails_twisted(i: int) -> Any:
        d: Deferred[int] = Deferred()
        loop.call_soon(d.errback, _Boom(i))
        try:
            await d.asFuture(loop)
        except _Boom:
            return i

    async def _cancelled(make: Callable[[Deferred[int]], asyncio.Future[int]], i: int) -> Any:
        cancelled: list[bool] = []
        d: Deferred[int] = Deferred(lambda _: cancelled.append(True))
        make(d).cancel()
        while not cancelled:  # the Deferred is cancelled from the future's done-callback, a turn later
            await asyncio.sleep(0)
        d.addErrback(lambda failure: failure.trap(CancelledError))
        return i

    async def cancel_ours(i: int) -> Any:
        return await _cancelled(as_future, i)

    async def cancel_twisted(i: int) -> Any:
        return await _cancelled(lambda d: d.asFuture(loop), i)

    async def _observe(d: Deferred[Any]) -> Any:
        fut = loop.create_future()
        d.addCallbacks(fut.set_result, lambda failure: fut.set_result(failure.value.args[0]))
        return await fut

    async def _raise(i: int) -> int:
        raise _Boom(i)

    async def _awaits_ours(i: int) -> int:
        d: Deferred[int] = Deferred()
        loop.call_soon(d.callback, i)
        return await d

    async def _awaits_twisted(i: int) -> int:
        d: Deferred[int] = Deferred()
        loop.call_soon(d.callback, i)
        return await d.asFuture(loop)

    async def to_deferred_ours(i: int) -> Any:
        return await _observe(as_deferred(_value(i)))

    async def to_deferred_twisted(i: int) -> Any:
        return await _observe(Deferred.fromFuture(asyncio.ensure_future(_value(i))))

    async def to_deferred_fails_ours(i: int) -> Any:
        return await _observe(as_deferred(_raise(i)))

    async def to_deferred_fails_twisted(i: int) -> Any:
        return await _observe(Deferred.fromFuture(asyncio.ensure_future(_raise(i))))

    async def to_deferred_awaits_ours(i: int) -> Any:
        return await _observe(as_deferred(_awaits_ours(i)))

    async def to_deferred_awaits_twisted(i: int) -> Any:
        return await _observe(Deferred.fromFuture(asyncio.ensure_future(_awaits_twisted(i))))

    to_asyncio, to_twisted = "await as_future(d) vs await d.asFuture(loop)", \
        "as_deferred(coro) vs Deferred.fromFuture(ensure_future(coro))"
    return [
        ("Deferred -> asyncio", "already fired", to_asyncio, fired_ours, fired_twisted),
        ("Deferred -> asyncio", "fired next loop turn", to_asyncio, later_ours, later_twisted),
        ("Deferred -> asyncio", "fails next loop turn (traceback kept)", to_asyncio, fails_ours, fails_twisted),
        ("Deferred -> asyncio", "future cancelled, until the Deferred is", "as_future(d).cancel() vs "
         "d.asFuture(loop).cancel()", cancel_ours, cancel_twisted),
        ("asyncio -> Deferred", "coroutine, until d fires", to_twisted, to_deferred_ours, to_deferred_twisted),
        ("asyncio -> Deferred", "coroutine raising, until d fails", to_twisted, to_deferred_fails_ours,
         to_deferred_fails_twisted),
        ("asyncio -> Deferred", "coroutine awaiting a Deferred fired next turn",
         "as_deferred(coro: await d) vs fromFuture(ensure_future(coro: await d.asFuture(loop)))",
         to_deferred_awaits_ours, to_deferred_awaits_twisted),
    ]


def _cross_thread(loop: asyncio.AbstractEventLoop, n: int) -> float:
    """n sequential ``await as_future(d)`` from a loop in another thread; each d is made and fired
    in the reactor's thread (``callFromThread``), as Twisted requires."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    async def run() -> float:
        t0 = time.process_time()
        for i in range(n):
            d: Deferred[int] = Deferred()
            reactor.callFromThread(d.callback, i)  # type: ignore[attr-defined]
            if await cutover_bridge.as_future(d) != i:
                raise AssertionError("as_future returned a wrong value across threads")
        return time.process_time() - t0

    return asyncio.run(run())


async def _cross_thread_baseline(n: int) -> float:
    """The same Deferreds fired the same way (``callFromThread``), awaited with asFuture on the reactor's loop."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    loop = asyncio.get_running_loop()
    t0 = time.process_time()
    for i in range(n):
        d: Deferred[int] = Deferred()
        reactor.callFromThread(d.callback, i)  # type: ignore[attr-defined]
        if await d.asFuture(loop) != i:
            raise AssertionError("asFuture returned a wrong value")
    return time.process_time() - t0


async def _time(op: Callable[[int], Awaitable[Any]], n: int) -> float:
    """n sequential ops. Awaiting an already-done future never yields to the loop, so the
    callbacks both adapters schedule with call_soon would pile up unrun: yield every
    YIELD_EVERY ops, and drain the loop before stopping the clock, so their cost counts."""
    t0 = time.process_time()
    for i in range(n):
        if await op(i) != i:
            raise AssertionError(f"{op.__name__} returned a wrong value")
        if i % YIELD_EVERY == 0:
            await asyncio.sleep(0)
    await asyncio.sleep(0)
    return time.process_time() - t0


async def _main() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if "twisted.internet.reactor" in sys.modules:
        raise RuntimeError("twisted.internet.reactor was imported before the benchmark could install "
                           "the asyncio reactor; run this benchmark in its own process")
    cutover_bridge.install_reactor()
    loop = asyncio.get_running_loop()
    rows, samples = [], {}
    try:
        for direction, case, compared, ours, twisted in _cases(loop):
            await _time(ours, WARMUP)
            await _time(twisted, WARMUP)
            t_ours, t_tw = [], []
            for rep in range(REPEATS):
                if rep % 2 == 0:
                    t_ours.append(await _time(ours, N))
                    t_tw.append(await _time(twisted, N))
                else:
                    t_tw.append(await _time(twisted, N))
                    t_ours.append(await _time(ours, N))
            us_ours, us_tw = median(t_ours) / N * 1e6, median(t_tw) / N * 1e6
            rows.append({
                "direction": direction,
                "case": case,
                "ops": N,
                "bridge us/op": us_ours,
                "twisted us/op": us_tw,
                "ratio bridge/twisted": us_ours / us_tw,
                "compared": compared,
            })
            samples[f"{direction}: {case}"] = {"bridge": t_ours, "twisted": t_tw}
        n = N // 4
        await loop.run_in_executor(None, _cross_thread, loop, WARMUP)
        t_ours, t_tw = [], []
        for _ in range(REPEATS):
            t_ours.append(await loop.run_in_executor(None, _cross_thread, loop, n))
            t_tw.append(await _cross_thread_baseline(n))
        us_ours, us_tw = median(t_ours) / n * 1e6, median(t_tw) / n * 1e6
        rows.append({
            "direction": "Deferred -> asyncio", "case": "from another thread's loop (no Twisted adapter)", "ops": n,
            "bridge us/op": us_ours, "twisted us/op": us_tw, "ratio bridge/twisted": us_ours / us_tw,
            "compared": "as_future(d) on a loop in a second thread vs d.asFuture(loop) on the reactor's loop",
        })
        samples["cross-thread"] = {"bridge": t_ours, "twisted": t_tw}
    finally:
        await cutover_bridge.stop_reactor()
    return rows, {"samples_seconds": samples}


def main() -> list[dict[str, Any]]:
    rows, raw = asyncio.run(_main())
    report(NAME, rows, notes=[
        "shared loop: Twisted's asyncio reactor runs on the asyncio loop (bridge.install_reactor())",
        "times are CPU seconds of the process (time.process_time, every thread), not wall time: on a shared "
        "machine other work's load would otherwise swamp microsecond differences",
        f"{N:,} sequential round trips per case; median of {REPEATS} repeats after {WARMUP:,} warm-up ops; "
        "bridge and Twisted alternate within each repeat",
        f"the timing loop yields to the event loop every {YIELD_EVERY} ops and once at the end, so callbacks "
        "scheduled with call_soon run inside the timed region (same for both sides)",
        "fired next loop turn: the Deferred is fired by loop.call_soon(d.callback, i) after the await starts",
        "asyncio -> Deferred is timed until the Deferred fires, observed identically for both "
        "(d.addCallback(fut.set_result); await fut)",
        "future cancelled: the future is cancelled at once and the clock runs until the Deferred's canceller has run",
        "from another thread's loop: each Deferred is made and fired in the reactor's thread (callFromThread); the "
        "baseline awaits the same kind of Deferred with asFuture on the reactor's own loop, so the ratio is what "
        "the thread hops cost",
        "ratio > 1 means the bridge is slower. On top of Twisted's adapters the bridge keeps the Deferred's result "
        "for later callbacks (asFuture consumes it), raises errors with their traceback, lets a task await "
        "Deferreds directly, carries contextvars and works across threads; the same-loop paths pay for none of "
        "that unless it is used",
    ], raw=raw, title="bridge: Deferred <-> asyncio round trips")
    return rows


if __name__ == "__main__":
    main()
