"""Moves on evidence, through a real ``cutover serve`` of a small service (``quotes/``) and the ``cutover`` command.

The quotes plan sets small gate figures and a 0.2 s evaluation interval, so
automatic moves happen within seconds; every wait is for a condition (the
route's mode, a history row), bounded by WAIT, never for a fixed time.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.host.plan import Plan
from tests.conftest import WAIT
from tests.ownservice.conftest import Served, cutover_command, env, serve

QUOTES = Path(__file__).resolve().parent / "quotes"
ROUTE = "GET /quotes/{n}"
MANUAL = "GET /manual/{n}"
_keys = itertools.count()


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out after {WAIT} s waiting for {what}"
        time.sleep(0.05)
    return found


@pytest.fixture
def quotes(tmp_path: Path) -> Path:
    """A private copy of the quotes service (tests edit its plan)."""
    target = tmp_path / "quotes"
    shutil.copytree(QUOTES, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def edit_plan(folder: Path, old: str, new: str) -> None:
    plan = folder / "cutover.toml"
    text = plan.read_text()
    assert old in text
    plan.write_text(text.replace(old, new))


def route_row(admin: httpx.Client, key: str) -> dict[str, Any]:
    overview = admin.get("/_cutover/api").json()
    return next(r for r in overview["routes"] if f"{r['method']} {r['template']}" == key)


def mode_of(admin: httpx.Client, key: str) -> tuple[str, float]:
    row = route_row(admin, key)
    return row["mode"], row["percent"]


def traffic(http: httpx.Client, n: int = 20, path: str = "/quotes") -> None:
    """Requests from ``n`` different users (the canary's sticky key), each answered in full."""
    for _ in range(n):
        i = next(_keys)
        response = http.get(f"{path}/{i}", headers={"X-User": f"user-{i}"})
        assert response.status_code in (200, 500), response.text


def history(admin: httpx.Client, key: str | None = None) -> list[dict[str, Any]]:
    response = admin.get("/_cutover/api/history", params={"route": key} if key else {})
    assert response.status_code == 200, response.text
    return list(response.json()["changes"])


def metric(admin: httpx.Client, name: str, **labels: str) -> float:
    text = admin.get("/_cutover/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def cli(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cutover_command(*args, "--url", served.url) if args[0] in ("promote", "rollback")
                          else cutover_command(*args), capture_output=True, text=True, timeout=WAIT,
                          env=env(served.log.parent / "var"))


@pytest.fixture
def running(quotes: Path, tmp_path: Path) -> Iterator[Callable[[], Served]]:
    """Start (and at the end stop) ``cutover serve`` of the quotes copy; each call starts it again, same store."""
    started: list[Served] = []

    def start() -> Served:
        served = serve(quotes / "cutover.toml", tmp_path / "work")
        started.append(served)
        return served

    yield start
    outputs = [served.stop() for served in started]  # every server stopped before any is judged
    for output in outputs:
        assert "Traceback" not in output, output


def test_with_modern_equal_an_automatic_route_walks_every_step_to_modern(quotes: Path, running: Callable[[], Served]) -> None:
    edit_plan(quotes, '"GET /quotes/{n}" = "legacy"', '"GET /quotes/{n}" = { mode = "legacy", auto = true }')
    served = running()
    with httpx.Client(base_url=served.url, timeout=WAIT) as http, served.admin() as admin:
        def arrived() -> bool:
            traffic(http, 10)
            return mode_of(admin, ROUTE) == ("modern", 0.0)

        wait_for(arrived, "the route to reach modern by itself")
        moves = list(reversed(history(admin, ROUTE)))
        steps = [(c["from"]["mode"], c["from"]["percent"], c["to"]["mode"], c["to"]["percent"]) for c in moves]
        assert steps == [("legacy", 0, "shadow", 0), ("shadow", 0, "canary", 10), ("canary", 10, "canary", 50),
                         ("canary", 50, "modern", 0)], steps
        for change in moves:
            assert change["automatic"] and change["who"] == "cutover" and not change["forced"], change
            assert change["action"] == "promote"
        shadow_exit = moves[1]["evidence"]
        assert shadow_exit["gates"]["passed"] and shadow_exit["gates"]["step"] == "shadow"
        parity = shadow_exit["evidence"]["parity"]
        assert parity["comparisons"] >= 20 and parity["different"] == 0 and parity["mismatch_upper_bound"] <= 0.25
        assert parity["legacy"]["p99_ms"] is not None and parity["modern"]["p99_ms"] is not None  # paired latencies
        canary_exit = moves[2]["evidence"]
        assert canary_exit["gates"]["step"] == "canary" and canary_exit["evidence"]["by_stack"]["modern"]["requests"] >= 4
        assert canary_exit["evidence"]["by_stack"]["legacy"]["requests"] > 0  # split by who answered
        assert metric(admin, "cutover_route_moves_total", route=ROUTE, action="promote", automatic="true") == 4
        traffic(http, 3)
        assert http.get("/quotes/1").headers["x-served-by"] == "modern"


@pytest.mark.parametrize("fault", ["fail", "slow"])
def test_modern_failing_or_slowing_in_the_canary_is_rolled_back_within_one_evaluation(
        fault: str, quotes: Path, running: Callable[[], Served]) -> None:
    # min_time keeps the canary from moving on: only a regression can move it
    edit_plan(quotes, '"GET /quotes/{n}" = "legacy"',
              '"GET /quotes/{n}" = { mode = "canary", percent = 50, auto = true, gates = { min_time = 3600, '
              'max_p99_ratio = 4 } }')
    served = running()
    with httpx.Client(base_url=served.url, timeout=WAIT) as http, served.admin() as admin:
        traffic(http, 20)  # a healthy canary is left alone
        assert mode_of(admin, ROUTE) == ("canary", 50.0)
        assert http.post("/fault", json={"fault": fault, "slow_s": 2.0}).status_code == 200
        served_by: dict[str, int] = {"legacy": 0, "modern": 0}

        def enough_modern() -> bool:
            if mode_of(admin, ROUTE)[0] != "canary":
                return True  # rolled back already
            i = next(_keys)
            response = http.get(f"/quotes/{i}", headers={"X-User": f"user-{i}"})
            served_by[response.headers["x-served-by"]] += 1
            return served_by["modern"] >= 5  # the plan's rollback_after

        wait_for(enough_modern, "modern to answer enough requests to judge it")
        evaluations = metric(admin, "cutover_gate_evaluations_total")
        wait_for(lambda: mode_of(admin, ROUTE)[0] != "canary", "the automatic rollback")
        assert mode_of(admin, ROUTE) == ("shadow", 0.0)  # legacy answers all again; modern still compared
        rollback = history(admin, ROUTE)[0]
        assert rollback["automatic"] and rollback["action"] == "rollback" and rollback["who"] == "cutover"
        assert (rollback["from"], rollback["to"]) == ({"mode": "canary", "percent": 50}, {"mode": "shadow", "percent": 0})
        cause = "max_error_increase" if fault == "fail" else "max_p99_ratio"
        assert rollback["why"].startswith("modern regressed") and cause in rollback["why"], rollback["why"]
        assert rollback["evidence"]["evaluation"] <= evaluations + 1  # the pass after the evidence was in, at the latest
        modern = rollback["evidence"]["evidence"]["by_stack"]["modern"]
        assert modern["requests"] >= 5
        if fault == "fail":
            assert modern["errors"] >= 1 and modern["error_rate"] > 0.05  # past max_error_increase
        assert metric(admin, "cutover_route_moves_total", route=ROUTE, action="rollback", automatic="true") == 1
        traffic(http, 10)  # held: a rolled-back route waits for an operator, whatever shadow shows
        assert mode_of(admin, ROUTE) == ("shadow", 0.0)
        assert all(http.get(f"/quotes/{i}").headers["x-served-by"] == "legacy" for i in range(5))


def test_a_move_without_evidence_is_refused_a_forced_one_is_recorded_and_both_survive_a_restart(
        quotes: Path, running: Callable[[], Served]) -> None:
    served = running()
    with served.admin() as admin:
        refused = admin.post("/_cutover/api/promote", json={"route": MANUAL})
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "gate_failed" and "min_comparisons" in error["message"]
        gates = {g["gate"]: g for g in error["refused"]["gates"]}
        assert gates["min_comparisons"]["figure"] == 0 and gates["min_comparisons"]["threshold"] == 20
        assert not gates["min_comparisons"]["passed"] and gates["max_mismatch"]["figure"] is None
        assert error["refused"]["target"] == {"mode": "canary", "percent": 10.0}
        direct = admin.post("/_cutover/api/routes", json={"method": "GET", "template": "/manual/{n}", "mode": "modern"})
        assert direct.status_code == 409 and direct.json()["error"]["refused"]["step"] == "shadow"
        assert mode_of(admin, MANUAL) == ("shadow", 0.0) and history(admin) == []

    shell = cli(served, "promote", MANUAL)
    assert shell.returncode == 1 and "refused" in shell.stderr, shell
    assert re.search(r"min_comparisons\s*\|\s*FAIL\s*\|\s*0\s*\|\s*20", shell.stdout), shell.stdout
    forced = cli(served, "promote", MANUAL, "--force", "--why", "load test next week")
    assert forced.returncode == 0 and "(forced)" in forced.stdout and "shadow -> canary 10%" in forced.stdout, forced

    with served.admin() as admin:
        change = history(admin, MANUAL)[0]
        assert change["forced"] and not change["automatic"] and change["who"] == "admin"
        assert change["why"] == "load test next week"
        assert not change["evidence"]["gates"]["passed"]  # the figures it was forced past
        assert change["evidence"]["evidence"]["parity"]["comparisons"] == 0
        reloaded = admin.post("/_cutover/api/reload")
        assert reloaded.status_code == 200 and mode_of(admin, MANUAL) == ("canary", 10.0)  # a reload keeps it
        status = cli(served, "status", "--plan", str(served.plan), "--db", str(served.log.parent / "var" / "cutover.db"))
        assert status.returncode == 0, status.stderr
        assert re.search(r"GET /manual/\{n\}.*\| canary 10%", status.stdout), status.stdout  # the mode the host runs
        before = (admin.get("/_cutover/api").json()["routes"], history(admin))
    served.stop()

    again = running()
    with again.admin() as admin:
        routes, changes = admin.get("/_cutover/api").json()["routes"], history(admin)
        assert [(r["method"], r["template"], r["mode"], r["percent"]) for r in routes] == \
            [(r["method"], r["template"], r["mode"], r["percent"]) for r in before[0]]
        assert changes == before[1]
        back = cli(again, "rollback", MANUAL, "--why", "done")
        assert back.returncode == 0 and "canary 10% -> shadow" in back.stdout, back
        assert mode_of(admin, MANUAL) == ("shadow", 0.0)
        assert history(admin)[0]["action"] == "rollback" and history(admin)[0]["why"] == "done"


def test_plan_export_writes_the_effective_plan_with_the_comments_and_round_trips(
        quotes: Path, running: Callable[[], Served]) -> None:
    served = running()
    with served.admin() as admin:
        for body in ({"method": "GET", "template": "/quotes/{n}", "mode": "canary", "percent": 25},
                     {"method": "GET", "template": "/manual/{n}", "mode": "legacy"}):
            assert admin.post("/_cutover/api/routes", json={**body, "force": True}).status_code == 200
        effective = {(r["method"], r["template"]): (r["mode"], r["percent"])
                     for r in admin.get("/_cutover/api").json()["routes"]}
        over_http = admin.get("/_cutover/api/plan/export")
        assert over_http.status_code == 200
    plan_file = quotes / "cutover.toml"
    exported = cli(served, "plan", "export", "--plan", str(plan_file), "--db", str(served.log.parent / "var" / "cutover.db"))
    assert exported.returncode == 0, exported.stderr
    text = exported.stdout
    assert text == over_http.text
    original = plan_file.read_text()
    for comment in re.findall(r"#.*", original):  # every comment of the file is still there
        assert comment in text, comment
    assert '"GET /quotes/{n}" = {mode = "canary", percent = 25}' in text.replace("{ ", "{").replace(" }", "}")
    parsed = Plan.parse(text)
    assert {(r.method, r.template): (r.mode, r.percent) for r in parsed.routes} == effective
    assert tomllib.loads(text)["gates"] == tomllib.loads(original)["gates"]

    plan_file.write_text(text)  # the export as the new file: the same effective plan, and it exports to itself
    with served.admin() as admin:
        assert admin.post("/_cutover/api/reload").status_code == 200
        assert {(r["method"], r["template"]): (r["mode"], r["percent"])
                for r in admin.get("/_cutover/api").json()["routes"]} == effective
        assert admin.get("/_cutover/api/plan/export").text == text
