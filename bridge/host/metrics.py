"""Prometheus metrics of the co-hosted service, and the event-loop lag probe.

Uses ``prometheus_client`` (the reference client library) with a registry of
our own, so embedding cutover never collides with an app's default registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, GCCollector, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

#: Distinct unrouted (method, path) pairs kept; past it they count under one overflow row, so a
#: scan of random paths cannot grow the table without bound.
MAX_UNROUTED = 500
OVERFLOW = ("*", "(more paths than cutover keeps)")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class LoopLagProbe:
    """Sleeps ``interval`` again and again and records how late it wakes: the loop's lag.

    A lag of tens of milliseconds means something blocked the loop (CPU work or
    a blocking call that should have gone to the pool).
    """

    def __init__(self, interval: float = 0.25, keep: int = 240) -> None:
        self.interval = interval
        self.samples: deque[float] = deque(maxlen=keep)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            self.samples.append(max(0.0, loop.time() - before - self.interval))

    def percentiles(self) -> dict[str, float]:
        ordered = sorted(self.samples)
        if not ordered:
            return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}

        def at(q: float) -> float:
            return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000

        return {"p50_ms": round(at(0.5), 3), "p99_ms": round(at(0.99), 3), "max_ms": round(ordered[-1] * 1000, 3)}


class _StateCollector(Collector):
    """Gauges read at scrape time from the pool, the shadow counts and the lag probe."""

    def __init__(self, pool_stats: Callable[[], dict[str, Any]], shadow_stats: Callable[[], dict[str, Any]],
                 lag: LoopLagProbe, admission: Callable[[], dict[str, int]] | None) -> None:
        self.pool_stats, self.shadow_stats, self.lag = pool_stats, shadow_stats, lag
        self.admission = admission

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self.pool_stats()
        for key in ("workers", "alive", "busy", "queued", "waiting", "completed", "failed", "crashed", "timeouts", "restarts"):
            yield GaugeMetricFamily(f"cutover_pool_{key}", f"shared pool: {key}", value=float(stats.get(key, 0)))
        shadow = GaugeMetricFamily("cutover_shadow_requests", "shadowed requests by outcome", labels=["route", "outcome"])
        rate = GaugeMetricFamily("cutover_shadow_mismatch_rate", "different / compared, per route", labels=["route"])
        for route, counts in self.shadow_stats().items():
            for outcome in ("compared", "equal", "different", "skipped", "not_mirrored", "errors", "unmapped", "suppressed",
                            "unrecorded"):
                shadow.add_metric([route, outcome], float(counts[outcome]))
            rate.add_metric([route], float(counts["mismatch_rate"]))
        yield shadow
        yield rate
        lag = GaugeMetricFamily("cutover_loop_lag_seconds", "event-loop lag percentiles", labels=["quantile"])
        for name, value in self.lag.percentiles().items():
            lag.add_metric([name.removesuffix("_ms")], value / 1000)
        yield lag
        # bridge.heap freezes the startup heap in `cutover serve`: full collections skip these objects
        yield GaugeMetricFamily("cutover_gc_frozen_objects", "objects in the garbage collector's permanent generation",
                                value=float(gc.get_freeze_count()))
        if self.admission is not None:
            for key, value in self.admission().items():
                yield GaugeMetricFamily(f"cutover_admission_{key}", f"front-door admission: {key}", value=float(value))


class Metrics:
    """Requests per route and stack, latency histograms, and the state gauges."""

    def __init__(self, pool_stats: Callable[[], dict[str, Any]], shadow_stats: Callable[[], dict[str, Any]],
                 lag: LoopLagProbe, admission: Callable[[], dict[str, int]] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cutover_requests", "requests through the front door", ["route", "stack", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "cutover_request_seconds", "front-door latency", ["route", "stack"], buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(pool_stats, shadow_stats, lag, admission))
        GCCollector(registry=self.registry)  # collections per generation: a p99 tail's first suspect
        self.split: dict[str, dict[str, int]] = {}
        #: Per (route, stack, status) seen: its counter, its latency histogram and its route's split, bound once.
        self._bound: dict[tuple[str, str, int], tuple[Any, Any, dict[str, int]]] = {}
        #: Requests that matched no plan route, per (method, path): the part of the to-do list the plan does not know.
        self.unrouted: dict[tuple[str, str], dict[str, int]] = {}
        self.unrouted_requests = Counter(
            "cutover_unrouted_requests", "requests that matched no plan route", ["method"], registry=self.registry
        )

    def observe_unrouted(self, method: str, path: str, status: int) -> None:
        key = (method, path)
        if key not in self.unrouted and len(self.unrouted) >= MAX_UNROUTED:
            key = OVERFLOW
        counts = self.unrouted.setdefault(key, {"requests": 0, "last_status": 0})
        counts["requests"] += 1
        counts["last_status"] = status
        self.unrouted_requests.labels(method if key != OVERFLOW else "*").inc()

    def unrouted_table(self) -> list[dict[str, Any]]:
        """Unrouted requests, most frequent first."""
        rows = [{"method": m, "path": p, **counts} for (m, p), counts in self.unrouted.items()]
        return sorted(rows, key=lambda row: (-row["requests"], row["path"], row["method"]))

    def observe(self, route: str, stack: str, status: int, seconds: float) -> None:
        # Each answer costs a dict lookup here, not prometheus_client's label lookup (a tuple of str()ed
        # labels checked and hashed under a lock) twice: the series are bound once, on their first answer.
        bound = self._bound.get((route, stack, status))
        if bound is None:
            bound = self._bind(route, stack, status)
        bound[0].inc()
        bound[1].observe(seconds)
        bound[2][stack] += 1

    def _bind(self, route: str, stack: str, status: int) -> tuple[Any, Any, dict[str, int]]:
        counts = self.split.setdefault(route, {"legacy": 0, "modern": 0})
        counts.setdefault(stack, 0)
        bound = (self.requests.labels(route, stack, str(status)), self.latency.labels(route, stack), counts)
        self._bound[(route, stack, status)] = bound
        return bound

    def render(self) -> bytes:
        return generate_latest(self.registry)
