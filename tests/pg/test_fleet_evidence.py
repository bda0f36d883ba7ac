"""Two real ``cutover serve`` replicas of the quotes service on one PostgreSQL: evidence and mismatches of the fleet.

Modern is made to fail on one replica only, so each figure says where it came
from: the gates on the healthy replica must see the other's mismatches, and
its mismatch browser must list them. Then the database goes away and comes
back: shadow keeps comparing, counts what it could not store, and stores again.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.testing import asyncio_test
from tests.conftest import WAIT
from tests.ownservice.conftest import TOKEN, Served, cutover_command, env, serve
from tests.pg.conftest import create_database
from tests.pgserver import PostgresServer

QUOTES = Path(__file__).resolve().parents[1] / "cutover" / "quotes"
MANUAL = "GET /manual/{n}"


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    import time

    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)  # polling HTTP state: the condition itself, every 50 ms
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def fleet(own_pg_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Served]]:
    monkeypatch.setenv("CUTOVER_DATABASE", create_database(own_pg_server))
    quotes = tmp_path / "quotes"
    shutil.copytree(QUOTES, quotes, ignore=shutil.ignore_patterns("__pycache__"))
    started: list[Served] = []
    try:
        for name in ("a", "b"):
            started.append(serve(quotes / "cutover.toml", tmp_path / name))
        yield started
    finally:
        outputs = [served.stop() for served in started]  # every replica stopped before any is judged
        for output in outputs:
            assert "Traceback" not in output, output


def summed(admin: httpx.Client) -> dict[str, Any]:
    return admin.get("/_cutover/api/fleet").json()["summed"][MANUAL]  # type: ignore[no-any-return]


def shadow_counts(admin: httpx.Client) -> dict[str, Any]:
    overview = admin.get("/_cutover/api").json()
    return next(r["shadow"] for r in overview["routes"] if f"{r['method']} {r['template']}" == MANUAL)


def manual_mismatches(admin: httpx.Client) -> list[dict[str, Any]]:
    answer = admin.get("/_cutover/api/mismatches", params={"route": MANUAL, "limit": 500})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["mismatches"])


@pytest.mark.subprocess
def test_the_gates_and_the_mismatch_browser_see_the_whole_fleet_and_shadow_survives_a_database_outage(
        fleet: list[Served], own_pg_server: PostgresServer) -> None:
    a, b = fleet
    with httpx.Client(base_url=a.url, timeout=WAIT) as http_a, httpx.Client(base_url=b.url, timeout=WAIT) as http_b, \
            a.admin() as admin_a, b.admin() as admin_b:
        assert http_b.post("/fault", json={"fault": "fail"}).status_code == 200  # b's modern only
        for i in range(12):
            for http in (http_a, http_b):
                answer = http.get(f"/manual/{i}")
                assert answer.status_code == 200 and answer.headers["x-served-by"] == "legacy", answer.text

        fleet_view = admin_a.get("/_cutover/api/fleet").json()
        me = next(r["replica"] for r in fleet_view["replicas"] if r["this"])
        other = next(r["replica"] for r in fleet_view["replicas"] if not r["this"])
        assert len([r for r in fleet_view["replicas"] if r["alive"]]) == 2

        # a holds 12 equal comparisons itself; b checkpoints its 12 mismatches within one evaluation (0.2 s)
        parity = wait_for(lambda: (p := summed(admin_a)["parity"])["comparisons"] == 24 and p, "b's evidence on a")
        assert parity["different"] == 12 and summed(admin_a)["replicas"] == 2
        own = admin_a.get("/_cutover/api/fleet").json()["evidence"][MANUAL][me]["parity"]
        assert (own["comparisons"], own["different"]) == (12, 0)

        listed = manual_mismatches(admin_a)
        assert len(listed) == 12 and {m["replica"] for m in listed} == {other}
        full = admin_a.get(f"/_cutover/api/mismatches/{listed[0]['id']}").json()
        assert full["modern"]["status"] == 500 and full["legacy"]["status"] == 200

        # a alone would pass min_comparisons only with b's 12, and b's mismatches fail the bound
        refused = admin_a.post("/_cutover/api/promote", json={"route": MANUAL})
        assert refused.status_code == 409, refused.text
        gates = {g["gate"]: g for g in refused.json()["error"]["refused"]["gates"]}
        assert gates["min_comparisons"]["figure"] == 24 and gates["min_comparisons"]["passed"]
        assert not gates["max_mismatch"]["passed"]

        # `cutover status` from a shell reads the fleet's store: every replica's mismatches and counts
        def status_line() -> str | None:
            status = subprocess.run(cutover_command("status", "--plan", str(a.plan)), capture_output=True, text=True,
                                    timeout=WAIT, env=env(a.log.parent / "var"))
            assert status.returncode == 0, status.stderr
            line = next(x for x in status.stdout.splitlines() if x.startswith(MANUAL))
            return line if "of 24" in line else None  # each replica stores its counts every few seconds

        assert "12 mismatches; rate 50.0% of 24" in wait_for(status_line, "cutover status to show the fleet's counts")

        # the database goes away: clients are answered, b compares on and counts what it cannot store
        own_pg_server.stop()
        before = shadow_counts(admin_b)
        for i in range(6):
            answer = http_b.get(f"/manual/{100 + i}")
            assert answer.status_code == 200 and answer.headers["x-served-by"] == "legacy", answer.text
        during = wait_for(lambda: (c := shadow_counts(admin_b))["unrecorded"] >= 6 and c,
                          "b to count the mismatches it could not store")
        assert during["compared"] == before["compared"] + 6 and during["different"] == before["different"] + 6
        metrics = admin_b.get("/_cutover/metrics").text
        assert any(line.startswith("cutover_shadow_requests{") and 'outcome="unrecorded"' in line
                   and 'route="GET /manual/{n}"' in line and float(line.rsplit(" ", 1)[1]) >= 6
                   for line in metrics.splitlines()), metrics
        down = admin_a.get("/_cutover/api/mismatches", params={"route": MANUAL})
        assert down.status_code == 503 and down.json()["error"]["code"] == "store_unavailable"
        assert down.headers["retry-after"]

        # back: the next mismatches are stored again, with nobody restarting anything
        own_pg_server.start()

        def stored_again() -> bool:
            http_b.get("/manual/999")
            answer = admin_a.get("/_cutover/api/mismatches", params={"route": MANUAL, "limit": 500})
            return answer.status_code == 200 and len(answer.json()["mismatches"]) > 12

        wait_for(stored_again, "mismatches to be stored once the database is back")


@pytest.mark.subprocess
@asyncio_test
async def test_the_dashboard_shows_the_fleet_its_summed_figures_and_a_replica_that_died(fleet: list[Served]) -> None:
    playwright_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")
    from tests.cutover.test_dashboard import browser_page, screenshot_path

    a, b = fleet
    async with httpx.AsyncClient(base_url=b.url, timeout=WAIT) as http_b:
        for i in range(5):
            assert (await http_b.get(f"/manual/{i}")).status_code == 200
    async with browser_page() as page:
        await page.goto(f"{a.url}/_cutover/")
        await page.fill("#token", TOKEN)
        await page.click("#login button[type=submit]")
        expect = playwright_api.expect
        await expect(page.locator("#fleet")).to_be_visible()
        await expect(page.locator('#replicas tbody tr[data-alive="true"]')).to_have_count(2)
        await expect(page.locator("#fleet-note")).to_contain_text("2 of 2 replicas alive")
        row = page.locator('#routes tr[data-route="GET /manual/{n}"] td.compared')
        await expect(row).to_contain_text("(5 over 2 replicas)")  # a compared none itself; b's 5 are summed in

        b.process.send_signal(signal.SIGKILL)
        b.process.wait(timeout=WAIT)
        await expect(page.locator('#replicas tbody tr[data-alive="false"]')).to_have_count(1)
        await expect(page.locator("#fleet-note")).to_contain_text("1 of 2 replicas alive")
        await page.screenshot(path=screenshot_path("dashboard-fleet.png"), full_page=True)
