"""Moving routes on evidence: gated moves, recorded moves, and the host's own progression and rollback.

:class:`Steering` is what the admin API, the command line (through the API)
and the host's evaluation loop call to move a route. Every move goes through
:meth:`Steering.move`: a forward move is judged by the gates
(:mod:`.gates`) and refused with :class:`GateRefused` unless forced; every
move, refused ones aside, is stored with who, why, the evidence and the gate
figures (:mod:`.history`), so a restart keeps it.

Routes with ``auto = true`` are evaluated every ``[gates] interval`` seconds:
a route whose modern answers regressed in canary or modern goes back to its
last safe mode (legacy answering everything: shadow, or legacy), and is then
held there until someone moves it by hand; otherwise a route whose gates pass
takes its next step (shadow, canary 10, canary 50, modern).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..errors import CutoverError, PlanError, StoreUnavailable
from .evidence import STACKS, EvidenceBook, Steps
from .gates import Verdict, interval, is_forward, judge, regression
from .history import Change, PlanStore, apply_overrides, file_value
from .plan import Plan, Route

__all__ = ["AUTOMATIC", "GateRefused", "Steering"]

log = logging.getLogger(__name__)
AUTOMATIC = "cutover"  # who the host's own moves are recorded as


class GateRefused(CutoverError):
    """A forward move the evidence does not support; ``verdict`` holds each gate's figures."""

    def __init__(self, route: str, target: dict[str, Any], verdict: Verdict, evidence: dict[str, Any]) -> None:
        self.route, self.target, self.verdict, self.evidence = route, target, verdict, evidence
        failing = ", ".join(result.gate for result in verdict.failing)
        super().__init__(f"{route} cannot move to {_show(target)}: gate{'s' if len(verdict.failing) > 1 else ''} "
                         f"{failing} failed ({verdict.explain()}); force the move to override")

    def as_dict(self) -> dict[str, Any]:
        return {"route": self.route, "target": self.target, **self.verdict.as_dict(), "evidence": self.evidence}


def _show(value: dict[str, Any]) -> str:
    return f"canary {value['percent']:g}%" if value["mode"] == "canary" else str(value["mode"])


def _target(mode: str, percent: float) -> dict[str, Any]:
    return {"mode": mode, "percent": float(percent) if mode == "canary" else 0.0}


class _EvidenceCollector(Collector):
    """Each route's evidence as gauges, read at scrape time."""

    def __init__(self, steering: Steering) -> None:
        self.steering = steering

    def collect(self) -> Any:
        bound = GaugeMetricFamily("cutover_route_mismatch_upper_bound", "upper 95% bound of the shadow mismatch rate",
                                  labels=["route"])
        comparisons = GaugeMetricFamily("cutover_route_comparisons", "shadow comparisons in the route's parity evidence",
                                        labels=["route"])
        p99 = GaugeMetricFamily("cutover_route_p99_seconds", "p99 latency in the current step, by who answered",
                                labels=["route", "stack"])
        errors = GaugeMetricFamily("cutover_route_error_rate", "5xx rate in the current step, by who answered",
                                   labels=["route", "stack"])
        auto = GaugeMetricFamily("cutover_route_auto", "1 when the host moves the route by itself", labels=["route"])
        plan = self.steering.plan()
        for route in plan.routes:
            evidence = self.steering.evidence.of(route.key)
            bound.add_metric([route.key], evidence.mismatch_bound())
            comparisons.add_metric([route.key], evidence.comparisons)
            auto.add_metric([route.key], 1.0 if route.auto else 0.0)
            for stack in STACKS:
                stats = evidence.window[stack]
                if (value := stats.p(0.99)) is not None:
                    p99.add_metric([route.key, stack], value / 1000)
                if (rate := stats.error_rate) is not None:
                    errors.add_metric([route.key, stack], rate)
        yield from (bound, comparisons, p99, errors, auto)


class Steering:
    """Gated, recorded moves of the plan's routes, and the evaluation loop of the automatic ones.

    ``plan`` and ``set_plan`` read and swap the host's effective plan; ``base``
    gives the plan as the file says it (what overrides are laid on).
    """

    def __init__(self, store: PlanStore, evidence: EvidenceBook, *, plan: Callable[[], Plan],
                 set_plan: Callable[[Plan], None], base: Callable[[], Plan], registry: CollectorRegistry) -> None:
        self.store, self.evidence = store, evidence
        self.plan, self.set_plan, self.base = plan, set_plan, base
        self.moves = Counter("cutover_route_moves", "route moves, by action and whether the host made them",
                             ["route", "action", "automatic", "forced"], registry=registry)
        self.evaluations = Counter("cutover_gate_evaluations", "evaluation passes over the automatic routes",
                                   registry=registry)
        registry.register(_EvidenceCollector(self))
        self.evaluation = 0  # passes made so far; each move records the pass it was made in
        self._held: set[str] = set()  # automatic routes the host rolled back: left for an operator
        self._lock = asyncio.Lock()  # one move at a time: a gate judged, then the plan swapped

    # ------------------------------------------------------------------ start-up and reload

    async def restore(self) -> None:
        """Evidence saved by the last run, and which automatic routes were left rolled back."""
        self.evidence.restore(await self.store.load_evidence())
        latest: dict[str, dict[str, Any]] = {}
        for row in reversed(await self.store.changes(limit=10_000)):
            if row["kind"] == "route":
                latest[row["key"]] = row
        self._held = {key for key, row in latest.items() if row["automatic"] and row["action"] == "rollback"}

    async def effective(self, base: Plan) -> Plan:
        """``base`` with the stored overrides on top; an override the file has since changed is dropped, and recorded."""
        plan, dropped = apply_overrides(base, await self.store.overrides())
        for override, reason in dropped:
            await self.store.drop_override(override["kind"], override["key"])
            change = Change(override["kind"], override["key"], override["value"],
                            file_value(base, override["kind"], override["key"]), AUTOMATIC,
                            f"override dropped: {reason}", automatic=True, action="dropped")
            await self.store.record(change, override=False)
            log.warning("plan override of %s dropped: %s", override["key"], reason)
        self.sync(plan)
        return plan

    def sync(self, plan: Plan) -> None:
        self.evidence.sync((route.key, route.mode, route.percent) for route in plan.routes)

    # ------------------------------------------------------------------ moves

    def route(self, key: str) -> Route:
        method, _, template = key.partition(" ")
        if not template.startswith("/"):
            raise PlanError(f'a route is written "METHOD /path", got {key!r}')
        found = self.plan().find(method, template)
        if found is None:
            raise LookupError(f"no route {key!r} in the plan")
        return found

    def verdict(self, route: Route, mode: str, percent: float) -> Verdict:
        return judge(self.plan(), route, mode, percent, self.evidence.fleet(route.key))

    async def gather(self) -> None:
        """Read the other replicas' evidence from a shared store, so the gates judge the whole fleet's traffic.

        A store of one host (SQLite) has no peers; a store that is away leaves the last reading in place.
        """
        fleet_evidence = getattr(self.store, "fleet_evidence", None)
        if fleet_evidence is None:
            return
        try:
            found, steps = await fleet_evidence(), await self.store.route_steps()
        except StoreUnavailable as exc:
            log.warning("fleet evidence not read: %s", exc)
            return
        me = getattr(self.store, "replica", None)
        self.evidence.set_peers(
            {route: [state for replica, state in by_replica.items() if replica != me]
             for route, by_replica in found.items()},
            {key: Steps(moved, shadowed) for key, (moved, shadowed) in steps.items()})

    async def move(self, method: str, template: str, mode: str, percent: float | None, *, who: str, why: str = "",
                   force: bool = False, automatic: bool = False) -> Change | None:
        """Move a route (adding it to the plan if it is not there); None when it is already there.

        Raises :class:`GateRefused` for an unforced forward move the gates refuse, and
        :class:`PlanError` for a move the plan cannot take.
        """
        await self.gather()
        async with self._lock:
            plan = self.plan()
            moved = plan.with_mode(method, template, mode, percent)  # validates (PlanError)
            route = moved.find(method, template)
            assert route is not None
            key = route.key
            current = plan.find(method, template) or Route(method, template)
            before, after = _target(current.mode, current.percent), _target(route.mode, route.percent)
            if before == after:
                return None
            verdict = judge(plan, current, route.mode, route.percent, self.evidence.fleet(key))
            summary = self.evidence.summary(key)
            if not verdict.passed and not force:
                raise GateRefused(key, after, verdict, summary)
            action = "promote" if is_forward(current, route.mode, route.percent) else "rollback"
            change = Change("route", key, before, after, who, why, force and not verdict.passed, automatic, action,
                            {"evidence": summary, "gates": verdict.as_dict(), "evaluation": self.evaluation})
            await self.store.record(change, base=file_value(self.base(), "route", key))
            self.set_plan(moved)
            self.evidence.of(key).enter(route.mode, route.percent)
            if not automatic:
                self._held.discard(key)
            self.moves.labels(key, action, str(automatic).lower(), str(change.forced).lower()).inc()
            log.info("route %s: %s -> %s by %s%s%s", key, _show(before), _show(after), who,
                     " (forced)" if change.forced else "", f": {why}" if why else "")
            return change

    async def promote(self, key: str, *, who: str, why: str = "", force: bool = False,
                      automatic: bool = False) -> Change | None:
        """The route's next step: legacy -> shadow -> canary 10 -> canary 50 -> modern."""
        route = self.route(key)
        if route.mode == "modern":
            raise PlanError(f"{key} is already on modern: nowhere further to go")
        mode, percent = route.next_mode()
        return await self.move(route.method, route.template, mode, percent, who=who, why=why, force=force,
                               automatic=automatic)

    async def rollback(self, key: str, *, who: str, why: str = "", automatic: bool = False,
                       evidence: Verdict | None = None) -> Change | None:
        """Back to the route's last safe mode (where legacy answered every request)."""
        route = self.route(key)
        if route.mode in ("legacy", "shadow"):
            raise PlanError(f"{key} is in {route.mode}: legacy already answers every request")
        mode = await self.last_safe_mode(route)
        if evidence is not None and not why:
            why = evidence.explain()
        return await self.move(route.method, route.template, mode, None, who=who, why=why, automatic=automatic)

    async def last_safe_mode(self, route: Route) -> str:
        """The mode this route was last in where legacy answered everything: shadow or legacy."""
        for row in await self.store.changes(route.key, limit=200):
            if row["from"] and row["from"]["mode"] in ("legacy", "shadow"):
                return str(row["from"]["mode"])
        from_file = file_value(self.base(), "route", route.key)
        if from_file and from_file["mode"] in ("legacy", "shadow"):
            return str(from_file["mode"])
        return "shadow" if route.shadow_safe else "legacy"

    async def record_owner(self, task: str, before: str, after: str, *, who: str, why: str = "") -> Change:
        change = Change("task", task, before, after, who, why, action="owner")
        return await self.store.record(change, base=file_value(self.base(), "task", task))

    # ------------------------------------------------------------------ the automatic routes

    async def evaluate(self) -> list[Change]:
        """One pass: roll back the automatic routes that regressed, promote those whose gates pass."""
        self.evaluations.inc()
        self.evaluation += 1
        await self.gather()
        made = []
        for route in self.plan().routes:
            if not route.auto:
                continue
            try:
                change = await self._evaluate(route)
            except GateRefused:
                change = None  # the evidence changed between the look and the move
            except PlanError as exc:
                log.warning("automatic move of %s failed: %s", route.key, exc)
                change = None
            if change is not None:
                made.append(change)
        return made

    async def _evaluate(self, route: Route) -> Change | None:
        evidence = self.evidence.fleet(route.key)
        regressed = regression(self.plan(), route, evidence)
        if regressed is not None:
            self._held.add(route.key)
            return await self.rollback(route.key, who=AUTOMATIC, why=f"modern regressed: {regressed.explain()}",
                                       automatic=True)
        if route.key in self._held or route.mode == "modern" or self.plan().in_modern(route) is False:
            return None
        if route.mode == "legacy" and not route.shadow_safe:
            return None  # shadow would compare nothing: only a person can take it further
        mode, percent = route.next_mode()
        if not judge(self.plan(), route, mode, percent, evidence).passed:
            return None
        return await self.promote(route.key, who=AUTOMATIC, why="every gate passed", automatic=True)

    def samples(self) -> dict[str, dict[str, Any]]:
        """Each route's figures now: one point of the dashboard's series."""
        points = {}
        for route in self.plan().routes:
            summary = self.evidence.summary(route.key)
            parity = summary["parity"]
            points[route.key] = {
                "mode": route.mode, "percent": route.percent,
                "legacy": summary["by_stack"]["legacy"],
                "modern": summary["by_stack"]["modern"] if summary["by_stack"]["modern"]["requests"] else parity["modern"],
                "comparisons": parity["comparisons"], "mismatch_rate": parity["mismatch_rate"],
                "mismatch_upper_bound": parity["mismatch_upper_bound"],
            }
        return points

    async def checkpoint(self) -> None:
        """Store the evidence and one point of every route's series."""
        await self.store.save_evidence(self.evidence.state())
        await self.store.add_samples(self.samples())

    async def run(self) -> None:
        """Evaluate every ``[gates] interval`` seconds until cancelled; a failing pass is logged, never fatal."""
        while True:
            await asyncio.sleep(interval(self.plan()))
            try:
                await self.evaluate()
                await self.checkpoint()
            except StoreUnavailable as exc:  # the evidence stays in memory; the next pass after its return saves it
                log.warning("evidence not checkpointed: %s", exc)
            except Exception:
                log.exception("evaluating the automatic routes failed")
