"""The gates' arithmetic: Wilson bounds, which step judges a move, regressions, overrides and the export."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.host.evidence import EvidenceBook, RouteEvidence, wilson_upper
from bridge.host.export import export_toml
from bridge.host.gates import judge, regression
from bridge.host.history import Change, PlanStore, apply_overrides
from bridge.host.plan import Plan
from bridge.testing import asyncio_test

PLAN = """
# the plan's own comment
[routes]
"GET /a" = "shadow"              # a
"GET /b" = { mode = "canary", percent = 10, gates = { min_time = 0 } }

[gates]
min_comparisons = 10
min_time = 0
max_mismatch = 0.4

[tasks]
sync = "legacy"
"""


def plan() -> Plan:
    return Plan.parse(PLAN, "cutover.toml")


@pytest.mark.parametrize(("k", "n", "bound"), [(0, 0, 1.0), (0, 20, 0.1611), (0, 1000, 0.0038), (5, 100, 0.1118),
                                               (100, 100, 1.0)])
def test_wilson_upper_bound(k: int, n: int, bound: float) -> None:
    assert wilson_upper(k, n) == pytest.approx(bound, abs=1e-4)
    assert wilson_upper(k, n) >= (k / n if n else 0)


def shadow_evidence(comparisons: int, different: int = 0, modern_s: float = 0.01, modern_status: int = 200) -> RouteEvidence:
    evidence = RouteEvidence("GET /a")
    evidence.enter("shadow", 0.0)
    for i in range(comparisons):
        evidence.compared(i >= different, 200, modern_status, (0.01, modern_s))
    return evidence


def test_legacy_to_shadow_is_free_and_going_back_is_never_refused() -> None:
    p = plan()
    route = p.find("GET", "/a")
    assert route is not None
    assert judge(p, route, "legacy", 0, RouteEvidence("GET /a")).passed
    legacy = Plan.parse('[routes]\n"GET /a" = "legacy"\n').find("GET", "/a")
    assert legacy is not None and judge(p, legacy, "shadow", 0, RouteEvidence("GET /a")).passed
    skipping = judge(p, legacy, "modern", 0, RouteEvidence("GET /a"))  # legacy straight to modern: no evidence
    assert not skipping.passed and skipping.step == "shadow"


def test_shadow_gates_judge_the_paired_comparisons() -> None:
    p = plan()
    route = p.find("GET", "/a")
    assert route is not None
    few = judge(p, route, "canary", 10, shadow_evidence(5))
    assert [r.gate for r in few.failing] == ["min_comparisons", "max_mismatch"]  # 5 < 10, and 0/5 is "at most 43 %"
    assert judge(p, route, "canary", 10, shadow_evidence(12)).passed
    different = judge(p, route, "canary", 10, shadow_evidence(12, different=6))
    assert [r.gate for r in different.failing] == ["max_mismatch"] and "6/12 different" in different.explain()
    slow = judge(p, route, "canary", 10, shadow_evidence(12, modern_s=0.05))
    assert [(r.gate, r.figure) for r in slow.failing] == [("max_p99_ratio", 5.0)]
    failing = judge(p, route, "canary", 10, shadow_evidence(12, modern_status=503))
    assert "max_error_increase" in [r.gate for r in failing.failing]


def test_a_canary_is_judged_on_its_own_step_split_by_who_answered() -> None:
    p = plan()
    route = p.find("GET", "/b")
    assert route is not None
    evidence = shadow_evidence(12)
    evidence.enter("canary", 10.0)
    none_yet = judge(p, route, "canary", 50, evidence)
    assert none_yet.step == "canary" and "min_comparisons" in [r.gate for r in none_yet.failing]
    for _ in range(10):
        evidence.window["modern"].observe(200, 0.01)
        evidence.window["legacy"].observe(200, 0.01)
    assert judge(p, route, "canary", 50, evidence).passed
    assert regression(p, route, evidence) is None  # 10 modern answers, below rollback_after (20)
    for _ in range(20):
        evidence.window["modern"].observe(500, 0.01)
    regressed = regression(p, route, evidence)
    assert regressed is not None and [r.gate for r in regressed.results] == ["max_error_increase"]


def test_a_modern_route_is_held_to_legacy_figures_from_the_step_before() -> None:
    p = Plan.parse('[routes]\n"GET /a" = "modern"\n')
    route = p.find("GET", "/a")
    assert route is not None
    evidence = RouteEvidence("GET /a")
    evidence.enter("canary", 50.0)
    for _ in range(30):
        evidence.window["legacy"].observe(200, 0.02)
    evidence.enter("modern", 0.0)
    assert evidence.baseline is not None and evidence.baseline["p99_ms"] == pytest.approx(20)
    for _ in range(25):
        evidence.window["modern"].observe(200, 0.2)
    regressed = regression(p, route, evidence)
    assert regressed is not None and regressed.results[0].gate == "max_p99_ratio"
    assert "an earlier step" in regressed.explain()


def test_evidence_survives_its_state_round_trip() -> None:
    book = EvidenceBook()
    book.sync([("GET /a", "shadow", 0.0)])
    for i in range(7):
        book.compared("GET /a", i != 3, 200, 200, (0.001 * i, 0.002 * i))
        book.observe("GET /a", "legacy", 200, 0.003)
    again = EvidenceBook()
    again.restore(book.state())
    assert again.summary("GET /a")["parity"] == book.summary("GET /a")["parity"]
    assert again.summary("GET /a")["by_stack"] == book.summary("GET /a")["by_stack"]


def test_overrides_lie_over_the_file_and_an_edited_file_wins() -> None:
    base = plan()
    overrides = [{"kind": "route", "key": "GET /a", "value": {"mode": "canary", "percent": 10.0},
                  "base": {"mode": "shadow", "percent": 0.0}},
                 {"kind": "task", "key": "sync", "value": "modern", "base": "legacy"}]
    effective, dropped = apply_overrides(base, overrides)
    assert dropped == [] and effective.find("GET", "/a").mode == "canary" and effective.tasks["sync"] == "modern"  # type: ignore[union-attr]
    edited = Plan.parse(PLAN.replace('"GET /a" = "shadow"', '"GET /a" = "legacy"'))
    effective, dropped = apply_overrides(edited, overrides)
    assert effective.find("GET", "/a").mode == "legacy"  # type: ignore[union-attr]
    assert [(o["key"], why) for o, why in dropped] == [("GET /a", "the plan file changed it since")]


def test_export_keeps_comments_and_round_trips() -> None:
    base = plan()
    effective = base.with_mode("GET", "/a", "canary", 25).with_mode("GET", "/b", "modern").with_mode(
        "GET", "/c", "shadow").with_owner("sync", "modern")
    text = export_toml(PLAN, effective)
    for comment in ("# the plan's own comment", "# a"):
        assert comment in text
    again = Plan.parse(text)
    assert [(r.key, r.mode, r.percent) for r in again.routes] == [(r.key, r.mode, r.percent) for r in effective.routes]
    assert again.find("GET", "/b").gates == base.find("GET", "/b").gates  # type: ignore[union-attr]
    assert again.tasks == effective.tasks and export_toml(text, again) == text
    assert export_toml(PLAN, base) == PLAN  # nothing moved: byte for byte


@asyncio_test
async def test_the_store_keeps_changes_and_overrides(tmp_path: Path) -> None:
    store = PlanStore(tmp_path / "cutover.db")
    await store.open()
    try:
        first = await store.record(Change("route", "GET /a", {"mode": "shadow", "percent": 0.0},
                                          {"mode": "canary", "percent": 10.0}, "alice", "go", forced=True),
                                   base={"mode": "shadow", "percent": 0.0})
        await store.record(Change("route", "GET /a", first.to_value, {"mode": "shadow", "percent": 0.0}, "cutover",
                                  "regressed", automatic=True, action="rollback"), base={"mode": "shadow", "percent": 0.0})
        changes = await store.changes("GET /a")
        assert [c["action"] for c in changes] == ["rollback", "promote"] and changes[1]["forced"]
        assert await store.changes(before=changes[0]["id"]) == changes[1:]
        assert [o["value"]["mode"] for o in await store.overrides()] == ["shadow"]
    finally:
        await store.close()
