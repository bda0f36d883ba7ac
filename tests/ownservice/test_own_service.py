"""A Klein service of another team, through cutover's public surface: every mode, an unported route,
shadow with the plan's diff rules, its periodic task moving between stacks, ``--only``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import WAIT
from tests.ownservice.conftest import Served, serve


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def move(admin: httpx.Client, route: str, mode: str, percent: float | None = None) -> httpx.Response:
    method, template = route.split(" ", 1)
    # forced: these moves are made on no evidence (the gates have tests of their own in tests/cutover)
    body: dict[str, object] = {"method": method, "template": template, "mode": mode, "force": True}
    if percent is not None:
        body["percent"] = percent
    return admin.post("/_cutover/api/routes", json=body)


def route_row(admin: httpx.Client, route: str) -> dict:
    overview = admin.get("/_cutover/api").json()
    return next(r for r in overview["routes"] if f"{r['method']} {r['template']}" == route)


def test_every_mode_on_a_klein_app_and_its_partial_rewrite(shop: Served) -> None:
    with httpx.Client(base_url=shop.url, timeout=WAIT) as http, shop.admin() as admin:
        put = http.put("/items/kiwi", json={"price": 2})
        assert put.status_code == 200 and put.headers["x-served-by"] == "legacy"
        assert move(admin, "PUT /items/{name}", "modern").status_code == 200
        put = http.put("/items/fig", json={"price": 3.5})
        assert put.headers["x-served-by"] == "modern" and put.json()["price_with_tax"] == 3.5 * 1.2
        bad = http.put("/items/fig", json={"price": "free"})
        assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_price")

        # A CPU route on the shared pool and a blocking one on a thread, from both stacks.
        for mode in ("legacy", "modern"):
            assert move(admin, "GET /primes/{n}", mode).status_code == 200
            assert move(admin, "POST /digest", mode).status_code == 200
            primes = http.get("/primes/100000")
            assert (primes.json(), primes.headers["x-served-by"]) == ({"n": 100000, "primes": 9592}, mode)
            digest = http.post("/digest", content=b"abc")
            assert digest.json()["sha256"].startswith("ba7816bf") and digest.headers["x-served-by"] == mode

        # canary: sticky per client (one address here), and 100% is all modern
        assert move(admin, "GET /primes/{n}", "canary", 50).status_code == 200
        assert len({http.get("/primes/10").headers["x-served-by"] for _ in range(20)}) == 1
        assert move(admin, "GET /primes/{n}", "canary", 100).status_code == 200
        assert {http.get("/primes/10").headers["x-served-by"] for _ in range(5)} == {"modern"}
        assert route_row(admin, "GET /primes/{n}")["traffic"]["modern"] >= 5


def test_an_unported_route_is_on_the_to_do_list_and_cannot_move(shop: Served) -> None:
    with httpx.Client(base_url=shop.url, timeout=WAIT) as http, shop.admin() as admin:
        home = http.get("/")
        assert home.status_code == 200 and home.headers["x-served-by"] == "legacy"
        refused = move(admin, "GET /", "shadow")
        assert refused.status_code == 422
        assert "modern does not serve it" in refused.json()["error"]["message"]
        for _ in range(3):
            assert http.get("/not-in-the-plan").status_code == 404
        overview = admin.get("/_cutover/api").json()
        inventory = {row["route"]: row for row in overview["inventory"]}
        assert inventory["GET /"] == {"route": "GET /", "in_plan": True, "mode": "legacy",
                                      "in_legacy": True, "in_modern": False}
        assert inventory["GET /items/{name}"]["in_modern"] is True  # Klein's <name> is the plan's {name}
        assert route_row(admin, "GET /")["next"] is None  # the dashboard offers no move
        unrouted = {(row["method"], row["path"]): row for row in overview["unrouted"]}
        assert unrouted[("GET", "/not-in-the-plan")]["requests"] == 3
        assert unrouted[("GET", "/not-in-the-plan")]["last_status"] == 404


def test_shadow_compares_by_the_plans_diff_rules(shop: Served) -> None:
    with httpx.Client(base_url=shop.url, timeout=WAIT) as http, shop.admin() as admin:
        for _ in range(5):
            answer = http.get("/items/apple")
            assert answer.headers["x-served-by"] == "legacy" and answer.json()["price"] == 0.5
        wait_for(lambda: route_row(admin, "GET /items/{name}")["shadow"]["compared"] == 5, "5 comparisons")
        assert route_row(admin, "GET /items/{name}")["shadow"]["different"] == 0  # served_at differs, by rule

        # The same traffic with the rule taken out of the plan: every answer differs in served_at. The A/A
        # sample is turned off with it: legacy asked twice would learn served_at as noise (10% of requests
        # by default) and suppress the very mismatch this checks; noise has tests of its own.
        shop.plan.write_text(shop.plan.read_text().replace(', ignore_values = ["served_at"]', ", aa_sample = 0"))
        reloaded = admin.post("/_cutover/api/reload")
        assert reloaded.status_code == 200, reloaded.text
        http.get("/items/apple")
        wait_for(lambda: route_row(admin, "GET /items/{name}")["shadow"]["different"] == 1, "the mismatch")
        [stored] = admin.get("/_cutover/api/mismatches").json()["mismatches"]
        assert "served_at" in stored["diff_text"] and "price" not in stored["diff_text"]
        assert admin.get(f"/_cutover/api/mismatches/{stored['id']}").json()["route"] == "GET /items/{name}"
        for bad in ("99999999999999999999999999", "0", "-1", "abc", "1e3"):
            refused = admin.get(f"/_cutover/api/mismatches/{bad}")
            assert (refused.status_code, refused.json()["error"]["code"]) == (422, "invalid_parameter"), bad
        assert admin.get("/_cutover/api/mismatches/9223372036854775807").status_code == 404


def test_the_periodic_task_moves_between_the_looping_call_and_the_modern_task(shop: Served) -> None:
    with httpx.Client(base_url=shop.url, timeout=WAIT) as http, shop.admin() as admin:
        restocks = lambda: http.get("/").json()["restocks"]  # noqa: E731
        wait_for(lambda: restocks()["legacy"] >= 2, "legacy's LoopingCall to run")
        assert restocks()["modern"] == 0
        assert admin.get("/_cutover/api").json()["tasks"] == {"audit": "legacy", "restock": "legacy"}
        moved = admin.post("/_cutover/api/tasks", json={"task": "restock", "owner": "modern"})
        assert moved.status_code == 200 and moved.json()["tasks"] == {"audit": "legacy", "restock": "modern"}
        frozen = restocks()["legacy"]
        wait_for(lambda: restocks()["modern"] >= 2, "modern's task to run")
        assert restocks()["legacy"] == frozen  # stopped before modern started: never both
        unknown = admin.post("/_cutover/api/tasks", json={"task": "nope", "owner": "modern"})
        assert unknown.status_code == 422 and "unknown task" in unknown.json()["error"]["message"]

        # A job only legacy has cannot go to modern: it would stop and run nowhere. It keeps running.
        audits = http.get("/").json()["audits"]
        unported = admin.post("/_cutover/api/tasks", json={"task": "audit", "owner": "modern"})
        assert unported.status_code == 422, unported.text
        assert unported.json()["error"]["message"] == (
            'task "audit": modern does not declare it (only legacy does), so it would run nowhere')
        assert admin.get("/_cutover/api").json()["tasks"]["audit"] == "legacy"
        wait_for(lambda: http.get("/").json()["audits"] > audits, "legacy's audit to go on running")


def test_the_served_process_freezes_its_startup_heap_and_reports_its_collections(shop: Served) -> None:
    with httpx.Client(base_url=shop.url, timeout=WAIT) as http, shop.admin() as admin:
        assert http.get("/primes/10").status_code == 200
        text = admin.get("/_cutover/metrics").text
        frozen = [line for line in text.splitlines() if line.startswith("cutover_gc_frozen_objects ")]
        assert len(frozen) == 1 and float(frozen[0].split()[1]) > 10_000, frozen  # Twisted, Klein, FastAPI, the apps
        assert 'python_gc_collections_total{generation="2"}' in text


def test_only_serves_one_side_of_the_same_apps(shop_copy: Path, tmp_path: Path) -> None:
    legacy = serve(shop_copy / "cutover.toml", tmp_path / "legacy", "--only", "legacy")
    modern = serve(shop_copy / "cutover.toml", tmp_path / "modern", "--only", "modern")
    try:
        with httpx.Client(timeout=WAIT) as http:
            assert http.get(f"{legacy.url}/").json()["shop"] == "itemshop"
            assert http.get(f"{modern.url}/").status_code == 404  # not ported: modern alone has no such route
            assert http.get(f"{modern.url}/primes/30").json() == {"n": 30, "primes": 10}
            assert "x-served-by" not in http.get(f"{legacy.url}/items/pear").headers  # no front door
            assert http.get(f"{legacy.url}/_cutover/api").status_code == 404  # no admin API either
            assert http.get(f"{modern.url}/_cutover/api").status_code == 404
    finally:
        outputs = legacy.stop() + modern.stop()
    assert "Traceback" not in outputs


def test_cutover_status_lists_the_unported_routes_and_the_unrouted_requests(shop_copy: Path, tmp_path: Path) -> None:
    import subprocess

    from tests.ownservice.conftest import cutover_command, env

    workdir = tmp_path / "elsewhere"
    served = serve(shop_copy / "cutover.toml", workdir)
    try:
        with httpx.Client(base_url=served.url, timeout=WAIT) as http:
            for _ in range(4):
                assert http.get("/legacy/only/path").status_code == 404
    finally:
        output = served.stop()  # the counts are stored on the way out (and every few seconds before)
    assert "cutover stopped" in output
    status = subprocess.run(
        cutover_command("status", "--plan", str(shop_copy / "cutover.toml"), "--db", str(workdir / "var" / "cutover.db")),
        capture_output=True, text=True, timeout=WAIT, cwd=workdir, env=env(workdir / "var"),
    )
    assert status.returncode == 0, status.stderr
    rows = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")[1:]] for line in status.stdout.splitlines()
            if "|" in line}
    assert rows["GET /"][:3] == ["yes", "no", "legacy"]  # Klein declares it, modern does not: the to-do list
    assert rows["PUT /items/{name}"][:2] == ["yes", "yes"]
    assert rows["GET"][:2] == ["/legacy/only/path", "4"]  # the unrouted table: method | path | requests | status
