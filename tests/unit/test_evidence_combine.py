"""Summing a fleet's evidence: only figures of the route's current step are added to this replica's."""

from __future__ import annotations

from bridge.host.evidence import EvidenceBook, RouteEvidence, Steps, combine
from bridge.host.gates import judge
from bridge.host.plan import Plan, Route

ROUTE = "GET /q/{n}"


def evidence(mode: str, since: float, parity_since: float | None, equal: int, different: int,
             served: int = 0) -> RouteEvidence:
    found = RouteEvidence(ROUTE, mode, 0.0, since, parity_since=parity_since)
    for i in range(equal + different):
        found.compared(i >= different, 200, 200 if i >= different else 500, (0.001, 0.002))
    for _ in range(served):
        found.window["legacy"].observe(200, 0.001)
    return found


def test_peers_of_the_same_step_are_summed_and_the_rest_left_out() -> None:
    local = evidence("shadow", 1000.0, 1000.0, 150, 0, served=40)
    same = evidence("shadow", 1001.5, 1001.5, 90, 10, served=60)
    late_joiner = evidence("shadow", 5000.0, 5000.0, 5, 0)  # started after the move: still this step
    earlier_round = evidence("shadow", 100.0, 100.0, 900, 900)  # a shadow step before the latest move
    other_mode = evidence("legacy", 1000.0, None, 0, 0, served=500)
    merged = combine(local, [same, late_joiner, earlier_round, other_mode], Steps(moved_at=999.0, shadow_at=999.0),
                     slack=60)
    assert (merged.comparisons, merged.different) == (255, 10)
    assert merged.window["legacy"].requests == 100 and merged.replicas == 3
    assert merged.since == 1000.0 and merged.parity_since == 1000.0
    assert (local.comparisons, local.window["legacy"].requests) == (150, 40)  # the replica's own is unchanged
    assert merged.summary()["replicas"] == 3


def test_the_gate_judges_the_fleet_and_one_replica_alone_falls_short() -> None:
    plan = Plan.parse('[apps]\nlegacy = "a:b"\nmodern = "c:d"\n[routes]\n"GET /q/{n}" = "shadow"\n'
                      "[gates]\nmin_comparisons = 200\nmin_time = 0\nmax_mismatch = 0.05\n", source=None)
    route = plan.find("GET", "/q/{n}")
    assert isinstance(route, Route)
    book = EvidenceBook()
    book.routes[ROUTE] = evidence("shadow", 1000.0, 1000.0, 150, 0)
    assert not judge(plan, route, "canary", 10, book.fleet(ROUTE)).passed
    book.set_peers({ROUTE: [evidence("shadow", 1002.0, 1002.0, 100, 0).state()]}, {ROUTE: Steps(999.0, 999.0)})
    verdict = judge(plan, route, "canary", 10, book.fleet(ROUTE))
    assert verdict.passed, verdict.as_dict()
    assert book.summary(ROUTE)["parity"]["comparisons"] == 250 and book.of(ROUTE).comparisons == 150
