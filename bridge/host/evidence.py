"""Evidence per route: what the two stacks did with the same traffic, kept to judge each step on.

Two kinds of evidence are kept for every route:

* ``parity``: from shadow mode, where both stacks answer the same request. It
  holds the comparisons and mismatches (with a Wilson upper bound on the
  mismatch rate, so 0 mismatches in 5 comparisons does not read as "0 %"), and
  each stack's errors and latencies on those same requests (paired). It starts
  afresh whenever the route enters shadow, and is kept after it leaves: a
  canary still carries the parity it was promoted on.
* ``window``: the current step (a mode, or a canary percent), split by the
  stack that answered. It starts afresh at every move.

``baseline`` is legacy's error rate and p99 from the last step that had legacy
figures: the reference a route in modern mode is held to when nothing else
answers beside it.

Latencies are kept as the last ``KEEP`` samples per stack, so percentiles
follow recent behaviour and memory stays bounded.

A fleet: each replica gathers its own evidence and checkpoints it to the
shared store; :meth:`EvidenceBook.fleet` lays the other replicas' last
checkpoints beside this one's (:func:`combine`), so the gates judge, and the
dashboard shows, the traffic of every replica. Only figures of the same step
are summed: a peer's window counts when it is in the same mode and percent
and began no earlier than the step's latest move (less :data:`FLEET_SLACK`),
and its parity when it began no earlier than the latest move into shadow.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EvidenceBook", "RouteEvidence", "StackStats", "Steps", "combine", "wilson_upper"]

KEEP = 2048  # latency samples kept per stack and kind of evidence
Z95 = 1.959963984540054  # two-sided 95 %
STACKS = ("legacy", "modern")
#: Seconds a replica may lag the move that began a step (a notification, a poll) and still count towards it.
FLEET_SLACK = 60.0


def wilson_upper(failures: int, trials: int, z: float = Z95) -> float:
    """The upper end of the Wilson score interval for ``failures / trials``; 1.0 with no trials."""
    if trials <= 0:
        return 1.0
    p = failures / trials
    z2 = z * z
    centre = p + z2 / (2 * trials)
    margin = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    return min(1.0, (centre + margin) / (1 + z2 / trials))


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class StackStats:
    """One stack's requests, server errors (5xx, or an exception) and recent latencies."""

    requests: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=KEEP))

    def observe(self, status: int, seconds: float | None) -> None:
        self.requests += 1
        if status >= 500:
            self.errors += 1
        if seconds is not None:
            self.latencies.append(seconds)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def p(self, q: float) -> float | None:
        """A latency percentile in milliseconds, None without samples."""
        if not self.latencies:
            return None
        return _percentile(sorted(self.latencies), q) * 1000

    def figures(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        p50 = _percentile(ordered, 0.5) * 1000 if ordered else None
        p99 = _percentile(ordered, 0.99) * 1000 if ordered else None
        rate = self.error_rate
        return {"requests": self.requests, "errors": self.errors,
                "error_rate": None if rate is None else round(rate, 6),
                "p50_ms": None if p50 is None else round(p50, 3), "p99_ms": None if p99 is None else round(p99, 3)}

    def state(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "latencies": list(self.latencies)}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> StackStats:
        stats = cls(int(data.get("requests", 0)), int(data.get("errors", 0)))
        stats.latencies.extend(float(x) for x in data.get("latencies", ())[-KEEP:])
        return stats

    @classmethod
    def summed(cls, parts: Iterable[StackStats]) -> StackStats:
        """Several replicas' stats as one: counts added, latency samples pooled (up to ``KEEP`` from each)."""
        parts = list(parts)
        total = cls()
        total.latencies = deque(maxlen=KEEP * max(1, len(parts)))
        for part in parts:
            total.requests += part.requests
            total.errors += part.errors
            total.latencies.extend(part.latencies)
        return total


def _pair() -> dict[str, StackStats]:
    return {stack: StackStats() for stack in STACKS}


@dataclass
class RouteEvidence:
    """The evidence of one route; see the module's docstring."""

    route: str
    mode: str = "legacy"
    percent: float = 0.0
    since: float = field(default_factory=time.time)  # when the current step began (wall clock)
    comparisons: int = 0
    different: int = 0
    parity_since: float | None = None
    parity: dict[str, StackStats] = field(default_factory=_pair)
    window: dict[str, StackStats] = field(default_factory=_pair)
    baseline: dict[str, float | None] | None = None
    #: How many replicas' figures these are (more than 1 once :func:`combine` summed a fleet's).
    replicas: int = 1

    def enter(self, mode: str, percent: float, now: float | None = None) -> None:
        """The route moved: a new window begins (and fresh parity when it enters shadow)."""
        now = time.time() if now is None else now
        legacy = self.window["legacy"] if self.window["legacy"].requests else self.parity["legacy"]
        if legacy.requests:
            self.baseline = {"error_rate": legacy.error_rate, "p99_ms": legacy.p(0.99)}
        if mode == "shadow" and self.mode != "shadow":
            self.comparisons = self.different = 0
            self.parity = _pair()
            self.parity_since = now
        self.mode, self.percent, self.since = mode, percent, now
        self.window = _pair()

    def compared(self, equal: bool, legacy_status: int, modern_status: int,
                 latencies: tuple[float, float] | None) -> None:
        self.comparisons += 1
        if not equal:
            self.different += 1
        legacy_s, modern_s = latencies if latencies is not None else (None, None)
        self.parity["legacy"].observe(legacy_status, legacy_s)
        self.parity["modern"].observe(modern_status, modern_s)

    def mismatch_bound(self) -> float:
        return wilson_upper(self.different, self.comparisons)

    def reference(self) -> tuple[float | None, float | None, str]:
        """Legacy's (error rate, p99 ms) to hold modern's canary or modern figures against, and where they come from."""
        legacy = self.window["legacy"]
        if legacy.requests:
            return legacy.error_rate, legacy.p(0.99), "legacy in this step"
        if self.baseline is not None:
            return self.baseline.get("error_rate"), self.baseline.get("p99_ms"), "legacy in an earlier step"
        return None, None, "none"

    def summary(self, now: float | None = None, noise_floor: dict[str, Any] | None = None) -> dict[str, Any]:
        """JSON-ready figures, as the admin API and the gates show them."""
        now = time.time() if now is None else now
        rate = self.different / self.comparisons if self.comparisons else None
        return {
            "route": self.route,
            "mode": self.mode,
            "percent": self.percent,
            "since": self.since,
            "time_in_mode_s": round(max(0.0, now - self.since), 3),
            "parity": {
                "since": self.parity_since,
                "comparisons": self.comparisons,
                "different": self.different,
                "mismatch_rate": None if rate is None else round(rate, 6),
                "mismatch_upper_bound": round(self.mismatch_bound(), 6),
                "confidence": 0.95,
                "noise_floor": noise_floor,
                "legacy": self.parity["legacy"].figures(),
                "modern": self.parity["modern"].figures(),
            },
            "by_stack": {stack: self.window[stack].figures() for stack in STACKS},
            "baseline": self.baseline,
            "replicas": self.replicas,
        }

    def state(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "percent": self.percent, "since": self.since, "comparisons": self.comparisons,
            "different": self.different, "parity_since": self.parity_since, "baseline": self.baseline,
            "parity": {s: self.parity[s].state() for s in STACKS}, "window": {s: self.window[s].state() for s in STACKS},
        }

    @classmethod
    def from_state(cls, route: str, data: dict[str, Any]) -> RouteEvidence:
        evidence = cls(route, str(data.get("mode", "legacy")), float(data.get("percent", 0.0)),
                       float(data.get("since", time.time())), int(data.get("comparisons", 0)),
                       int(data.get("different", 0)), data.get("parity_since"))
        evidence.parity = {s: StackStats.from_state(data.get("parity", {}).get(s, {})) for s in STACKS}
        evidence.window = {s: StackStats.from_state(data.get("window", {}).get(s, {})) for s in STACKS}
        evidence.baseline = data.get("baseline")
        return evidence


@dataclass(frozen=True)
class Steps:
    """When a route's current step began, fleet-wide: its latest move, and its latest move into shadow (unix s)."""

    moved_at: float | None = None
    shadow_at: float | None = None


def combine(local: RouteEvidence, peers: Iterable[RouteEvidence], steps: Steps = Steps(),
            slack: float = FLEET_SLACK) -> RouteEvidence:
    """``local`` with the peers' figures of the same step added (see the module's docstring).

    The result is a new :class:`RouteEvidence` in ``local``'s mode, whose ``since`` is the
    earliest of the windows summed (the fleet's time in the step); ``local`` is not changed.
    """
    step = (local.mode, local.percent)
    windows, parities = [local], [local] if local.parity_since is not None else []
    for peer in peers:
        if (peer.mode, peer.percent) == step and (steps.moved_at is None or peer.since >= steps.moved_at - slack):
            windows.append(peer)
        if peer.parity_since is not None and local.parity_since is not None and (
                steps.shadow_at is None or peer.parity_since >= steps.shadow_at - slack):
            parities.append(peer)
    merged = RouteEvidence(local.route, local.mode, local.percent, min(w.since for w in windows))
    merged.window = {stack: StackStats.summed(w.window[stack] for w in windows) for stack in STACKS}
    merged.baseline = local.baseline
    if parities:
        merged.parity_since = min(p.parity_since for p in parities if p.parity_since is not None)
        merged.comparisons = sum(p.comparisons for p in parities)
        merged.different = sum(p.different for p in parities)
        merged.parity = {stack: StackStats.summed(p.parity[stack] for p in parities) for stack in STACKS}
    else:
        merged.comparisons, merged.different, merged.parity = local.comparisons, local.different, local.parity
    merged.replicas = 1 + len({id(w) for w in [*windows, *parities]} - {id(local)})
    return merged


class EvidenceBook:
    """Every route's evidence; fed by the front door (who answered) and the shadow recorder (paired answers).

    ``noise_floor`` (a route label -> dict or None) is asked for when a summary is made:
    the shadow recorder measures it where it can.
    """

    def __init__(self, noise_floor: Callable[[str], dict[str, Any] | None] | None = None) -> None:
        self.routes: dict[str, RouteEvidence] = {}
        self.noise_floor = noise_floor or (lambda route: None)
        #: The other replicas' last checkpoints per route, and when each route's step began (:meth:`set_peers`).
        self.peers: dict[str, list[RouteEvidence]] = {}
        self.steps: dict[str, Steps] = {}

    def set_peers(self, states: dict[str, list[dict[str, Any]]], steps: dict[str, Steps]) -> None:
        """The other replicas' saved states (``{route: [state, ...]}``), read from the fleet's store."""
        self.peers = {route: [RouteEvidence.from_state(route, state) for state in found]
                      for route, found in states.items()}
        self.steps = dict(steps)

    def fleet(self, route: str) -> RouteEvidence:
        """This replica's evidence of ``route`` with the fleet's of the same step: what the gates judge."""
        local = self.of(route)
        peers = self.peers.get(route)
        return combine(local, peers, self.steps.get(route, Steps())) if peers else local

    def of(self, route: str) -> RouteEvidence:
        found = self.routes.get(route)
        if found is None:
            found = self.routes[route] = RouteEvidence(route)
        return found

    def sync(self, modes: Iterable[tuple[str, str, float]]) -> None:
        """Start a new window for each route whose (mode, percent) is not the one its evidence was gathered in."""
        for route, mode, percent in modes:
            evidence = self.of(route)
            if (evidence.mode, evidence.percent) != (mode, percent):
                evidence.enter(mode, percent)

    # the front door's observer (who answered, how fast)
    def observe(self, route: str, stack: str, status: int, seconds: float) -> None:
        if stack in STACKS and route in self.routes:
            self.routes[route].window[stack].observe(status, seconds)

    def observe_unrouted(self, method: str, path: str, status: int) -> None:
        """Requests outside the plan carry no evidence."""

    # the shadow recorder's listener (both answers to one request)
    def compared(self, route: str, equal: bool, legacy_status: int, modern_status: int,
                 latencies: tuple[float, float] | None) -> None:
        if route in self.routes:
            self.routes[route].compared(equal, legacy_status, modern_status, latencies)

    def summary(self, route: str) -> dict[str, Any]:
        """The fleet's figures of ``route`` (this replica's alone when it has no peers)."""
        return self.fleet(route).summary(noise_floor=self.noise_floor(route))

    def state(self) -> dict[str, dict[str, Any]]:
        return {route: evidence.state() for route, evidence in self.routes.items()}

    def restore(self, saved: dict[str, dict[str, Any]]) -> None:
        for route, data in saved.items():
            self.routes[route] = RouteEvidence.from_state(route, data)
