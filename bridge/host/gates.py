"""Promotion gates: the thresholds a route's evidence must meet before it moves on, and when it must go back.

A forward move (towards modern) is judged on the evidence of the step the
route is in now:

* from ``legacy``: only to ``shadow``, which never changes what a client gets,
  is free; going further from legacy has no evidence behind it, and is refused
  by the shadow gates (no comparisons).
* from ``shadow``: the comparisons made in shadow. ``min_comparisons``,
  ``max_mismatch`` (the Wilson 95 % upper bound of the mismatch rate, not the
  bare ratio), ``max_p99_ratio`` (modern's p99 over legacy's, on the same
  requests), ``max_error_increase`` (modern's 5xx rate minus legacy's, on the
  same requests) and ``min_time`` (seconds in shadow).
* from ``canary``: the current canary step split by who answered: the requests
  modern answered (``min_comparisons``), their error rate and p99 against
  legacy's in the same step, ``min_time``, and the shadow parity the canary was
  promoted on (``max_mismatch``).

A move back (towards legacy) is always allowed. A route in ``canary`` or
``modern`` regresses when, after ``rollback_after`` requests answered by modern
in its step, modern's error rate or p99 passes the same bounds; an automatic
route then goes back to its last safe mode.

Thresholds resolve, later winning: :data:`DEFAULTS`, ``[gates]``,
``[gates.<step>]``, the route's ``gates``, the route's ``gates.<step>``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .evidence import RouteEvidence
from .plan import GATE_KEYS, GATE_STEPS, MODES, Plan, Route

__all__ = ["DEFAULTS", "DEFAULT_INTERVAL", "GATE_STEPS", "GateResult", "Verdict", "interval", "is_forward", "judge",
           "regression", "thresholds"]

DEFAULTS: dict[str, float] = {
    "min_comparisons": 200,  # shadow: comparisons; canary: requests modern answered in the step
    "max_mismatch": 0.01,  # upper 95 % bound of the mismatch rate
    "max_p99_ratio": 1.5,  # modern p99 / legacy p99
    "max_error_increase": 0.01,  # modern 5xx rate - legacy 5xx rate
    "min_time": 300.0,  # seconds in the current step
    "rollback_after": 20,  # requests modern answered in the step before a regression can roll it back
}
DEFAULT_INTERVAL = 30.0  # seconds between two evaluations of the automatic routes
_LATENCY_FLOOR_MS = 5.0  # a p99 under 5 ms is taken as 5 ms: ratios of a few milliseconds are noise


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    figure: float | None  # what the evidence says (None: no evidence)
    threshold: float
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """A move judged: the step whose gates applied, and each gate's result (empty when none applies)."""

    step: str | None
    results: tuple[GateResult, ...] = ()

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    @property
    def failing(self) -> list[GateResult]:
        return [result for result in self.results if not result.passed]

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "passed": self.passed, "gates": [r.as_dict() for r in self.results]}

    def explain(self) -> str:
        failing = self.failing
        if not failing:
            return "every gate passes"
        return "; ".join(result.message for result in failing)


def thresholds(plan: Plan, route: Route | None, step: str) -> dict[str, float]:
    """The gate thresholds of ``route`` in ``step``, from the defaults, the plan and the route."""
    merged = dict(DEFAULTS)
    for layer in (plan.gates, route.gates if route is not None else {}):
        merged.update({k: float(v) for k, v in layer.items() if k in GATE_KEYS})
        step_layer = layer.get(step)
        if isinstance(step_layer, Mapping):
            merged.update({k: float(v) for k, v in step_layer.items()})
    return merged


def interval(plan: Plan) -> float:
    """Seconds between two evaluations: ``[gates] interval``."""
    return float(plan.gates.get("interval", DEFAULT_INTERVAL))


def _rank(mode: str, percent: float) -> tuple[int, float]:
    return MODES.index(mode), percent if mode == "canary" else 0.0


def is_forward(current: Route, mode: str, percent: float) -> bool:
    """Whether moving ``current`` to (mode, percent) sends more traffic to modern."""
    return _rank(mode, percent) > _rank(current.mode, current.percent)


def judge(plan: Plan, route: Route, mode: str, percent: float, evidence: RouteEvidence,
          now: float | None = None) -> Verdict:
    """Whether the evidence supports moving ``route`` to (mode, percent)."""
    if not is_forward(route, mode, percent):
        return Verdict(None)  # back towards legacy: always allowed
    if route.mode == "legacy" and mode == "shadow":
        return Verdict(None)  # shadow never changes an answer
    step = "canary" if route.mode == "canary" else "shadow"
    limits = thresholds(plan, route, step)
    now = time.time() if now is None else now
    results = [_min_time(evidence, limits, now)]
    bound = evidence.mismatch_bound()
    comparisons = evidence.comparisons
    if step == "shadow":
        passed = comparisons >= limits["min_comparisons"]
        results.insert(0, GateResult(
            "min_comparisons", passed, comparisons, limits["min_comparisons"],
            f"min_comparisons: {comparisons} comparisons in shadow {_cmp(passed, False)} "
            f"{limits['min_comparisons']:g} needed"))
        legacy, modern = evidence.parity["legacy"], evidence.parity["modern"]
        reference = legacy.error_rate, legacy.p(0.99), "legacy on the same requests"
    else:
        answered = evidence.window["modern"].requests
        passed = answered >= limits["min_comparisons"]
        results.insert(0, GateResult(
            "min_comparisons", passed, answered, limits["min_comparisons"],
            f"min_comparisons: modern answered {answered} requests in this canary step {_cmp(passed, False)} "
            f"{limits['min_comparisons']:g} needed"))
        modern = evidence.window["modern"]
        reference = evidence.reference()
    passed = comparisons > 0 and bound <= limits["max_mismatch"]
    results.insert(1, GateResult(
        "max_mismatch", passed, round(bound, 6) if comparisons else None, limits["max_mismatch"],
        f"max_mismatch: {evidence.different}/{comparisons} different, upper 95% bound {bound:.4f} "
        f"{_cmp(passed)} {limits['max_mismatch']:g}" if comparisons else "max_mismatch: no shadow comparisons"))
    results.extend(_against(modern.error_rate, modern.p(0.99), reference, limits))
    return Verdict(step, tuple(results))


def regression(plan: Plan, route: Route, evidence: RouteEvidence) -> Verdict | None:
    """The failing bounds when modern regressed in this canary or modern step; None when it did not (or too soon)."""
    if route.mode not in ("canary", "modern"):
        return None
    limits = thresholds(plan, route, route.mode)
    modern = evidence.window["modern"]
    if modern.requests < max(1.0, limits["rollback_after"]):
        return None
    verdict = Verdict(route.mode, tuple(_against(modern.error_rate, modern.p(0.99), evidence.reference(), limits)))
    failing = [r for r in verdict.failing if r.figure is not None]  # a missing reference is no regression
    return Verdict(route.mode, tuple(failing)) if failing else None


def _min_time(evidence: RouteEvidence, limits: dict[str, float], now: float) -> GateResult:
    spent = max(0.0, now - evidence.since)
    passed = spent >= limits["min_time"]
    return GateResult("min_time", passed, round(spent, 3), limits["min_time"],
                      f"min_time: {spent:.1f} s in {evidence.mode} {_cmp(passed, False)} {limits['min_time']:g} s needed")


def _against(modern_errors: float | None, modern_p99: float | None,
             reference: tuple[float | None, float | None, str], limits: dict[str, float]) -> list[GateResult]:
    legacy_errors, legacy_p99, where = reference
    results = []
    if modern_errors is None or legacy_errors is None:
        results.append(GateResult("max_error_increase", False, None, limits["max_error_increase"],
                                  "max_error_increase: no error rates to compare yet"))
    else:
        increase = modern_errors - legacy_errors
        passed = increase <= limits["max_error_increase"]
        results.append(GateResult(
            "max_error_increase", passed, round(increase, 6), limits["max_error_increase"],
            f"max_error_increase: modern {modern_errors:.2%} errors against {legacy_errors:.2%} ({where}), "
            f"{increase:+.2%} {_cmp(passed)} {limits['max_error_increase']:.2%}"))
    if modern_p99 is None or legacy_p99 is None:
        results.append(GateResult("max_p99_ratio", False, None, limits["max_p99_ratio"],
                                  "max_p99_ratio: no latencies to compare yet"))
    else:
        ratio = max(modern_p99, _LATENCY_FLOOR_MS) / max(legacy_p99, _LATENCY_FLOOR_MS)
        passed = ratio <= limits["max_p99_ratio"]
        results.append(GateResult(
            "max_p99_ratio", passed, round(ratio, 3), limits["max_p99_ratio"],
            f"max_p99_ratio: modern p99 {modern_p99:.1f} ms against {legacy_p99:.1f} ms ({where}), "
            f"ratio {ratio:.2f} {_cmp(passed)} {limits['max_p99_ratio']:g}"))
    return results


def _cmp(passed: bool, upper: bool = True) -> str:
    """The comparison a message shows: within the bound, or past it."""
    if upper:
        return "<=" if passed else ">"
    return ">=" if passed else "<"

