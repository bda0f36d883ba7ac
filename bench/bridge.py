"""Deferred <-> asyncio hand-off cost: the bridge vs Twisted's own adapters.

Runs with Twisted's asyncio reactor on the running loop (``bridge.install_reactor``),
the shared-loop arrangement, so both sides are direct calls on one thread:

* Deferred -> asyncio: ``await bridge.as_future(d)`` vs ``await d.asFuture(loop)``,
  for a Deferred that has already fired and for one fired on a later loop turn;
* asyncio -> Deferred: ``bridge.as_deferred(coro)`` vs
  ``Deferred.fromFuture(asyncio.ensure_future(coro))``, timed until the
  Deferred fires (both observed the same way: a callback resolving a loop future).
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
REPEATS = 3
YIELD_EVERY = 100


async def _value(i: int) -> int:
    return i


def _cases(loop: asyncio.AbstractEventLoop) -> list[tuple[str, str, str, Callable[[int], Awaitable[Any]], Callable[[int], Awaitable[Any]]]]:
    from twisted.internet.defer import Deferred, succeed

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

    async def _observe(d: Deferred[Any]) -> Any:
        fut = loop.create_future()
        d.addCallback(fut.set_result)
        return await fut

    async def to_deferred_ours(i: int) -> Any:
        return await _observe(as_deferred(_value(i)))

    async def to_deferred_twisted(i: int) -> Any:
        return await _observe(Deferred.fromFuture(asyncio.ensure_future(_value(i))))

    return [
        ("Deferred -> asyncio", "already fired", "await as_future(d) vs await d.asFuture(loop)",
         fired_ours, fired_twisted),
        ("Deferred -> asyncio", "fired next loop turn", "await as_future(d) vs await d.asFuture(loop)",
         later_ours, later_twisted),
        ("asyncio -> Deferred", "coroutine, until d fires", "as_deferred(coro) vs Deferred.fromFuture(ensure_future(coro))",
         to_deferred_ours, to_deferred_twisted),
    ]


async def _time(op: Callable[[int], Awaitable[Any]], n: int) -> float:
    """n sequential ops. Awaiting an already-done future never yields to the loop, so the
    callbacks both adapters schedule with call_soon would pile up unrun: yield every
    YIELD_EVERY ops, and drain the loop before stopping the clock, so their cost counts."""
    t0 = time.perf_counter()
    for i in range(n):
        if await op(i) != i:
            raise AssertionError(f"{op.__name__} returned a wrong value")
        if i % YIELD_EVERY == 0:
            await asyncio.sleep(0)
    await asyncio.sleep(0)
    return time.perf_counter() - t0


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
    finally:
        await cutover_bridge.stop_reactor()
    return rows, {"samples_seconds": samples}


def main() -> list[dict[str, Any]]:
    rows, raw = asyncio.run(_main())
    report(NAME, rows, notes=[
        "shared loop: Twisted's asyncio reactor runs on the asyncio loop (bridge.install_reactor())",
        f"{N:,} sequential round trips per case; median of {REPEATS} repeats after {WARMUP:,} warm-up ops; "
        "bridge and Twisted alternate within each repeat",
        f"the timing loop yields to the event loop every {YIELD_EVERY} ops and once at the end, so callbacks "
        "scheduled with call_soon run inside the timed region (same for both sides)",
        "fired next loop turn: the Deferred is fired by loop.call_soon(d.callback, i) after the await starts",
        "asyncio -> Deferred is timed until the Deferred fires, observed identically for both "
        "(d.addCallback(fut.set_result); await fut)",
        "ratio > 1 means the bridge is slower; it also carries contextvars, cancellation both ways, "
        "exception tracebacks and reactor-thread support, which Twisted's adapters do not",
    ], raw=raw, title="bridge: Deferred <-> asyncio round trips")
    return rows


if __name__ == "__main__":
    main()
