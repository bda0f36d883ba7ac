"""The front door routes by the plan, moves traffic at runtime, shadows and records differences."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute

from bridge.testing import asyncio_test
from tests.conftest import until
from tests.cutover.conftest import TOKEN, Running


async def served_by(run: Running, method: str, path: str, **kwargs: Any) -> str:
    response = await run.http.request(method, path, **kwargs)
    assert response.status_code < 500, response.text
    return response.headers["x-served-by"]


@asyncio_test
async def test_each_route_is_answered_by_the_stack_the_plan_names(cohost: Running) -> None:
    assert await served_by(cohost, "GET", "/status") == "modern"
    status = (await cohost.http.get("/status")).json()
    assert status["service"] == "modern" and status["pool"]["workers"] == cohost.host.pool.processes
    assert await served_by(cohost, "POST", "/v1/domains", json={"text": "a.example.com"}) == "legacy"
    # routes the plan does not name stay on legacy, which answers them as it always has
    unknown = await cohost.http.get("/nope")
    assert unknown.status_code == 404 and unknown.headers["x-served-by"] == "legacy"


async def set_mode(run: Running, mode: str, percent: float | None = None) -> None:
    # forced: these tests move routes on no evidence (the gates are tested in test_gates.py)
    body: dict[str, Any] = {"method": "POST", "template": "/v1/domains", "mode": mode, "force": True}
    if percent is not None:
        body["percent"] = percent
    response = await run.admin.post("/_cutover/api/routes", json=body)
    assert response.status_code == 200, response.text


async def split(run: Running, n: int = 40) -> Counter[str]:
    stacks = await asyncio.gather(
        *(served_by(run, "POST", "/v1/domains", json={"text": "x.example.com"}, headers={"X-Cutover-Key": f"user-{i}"})
          for i in range(n))
    )
    return Counter(stacks)


@asyncio_test
async def test_a_route_moves_legacy_shadow_canary_modern_at_runtime(cohost: Running) -> None:
    assert await split(cohost) == {"legacy": 40}
    await set_mode(cohost, "shadow")
    assert await split(cohost) == {"legacy": 40}
    def shadowed() -> int:
        counts = cohost.host.recorder.stats().get("POST /v1/domains", {})
        return counts.get("compared", 0) + counts.get("skipped", 0)

    await until(lambda: shadowed() == 40, "the shadow comparisons")  # past 8 in flight, copies are skipped
    shadow = cohost.host.recorder.stats()["POST /v1/domains"]
    assert shadow["compared"] >= 8 and shadow["equal"] == shadow["compared"] and shadow["different"] == 0
    await set_mode(cohost, "canary", 50)
    canary = await split(cohost, 200)
    assert set(canary) == {"legacy", "modern"} and 60 <= canary["modern"] <= 140
    sticky = {await served_by(cohost, "POST", "/v1/domains", json={"text": "y.example.com"},
                              headers={"X-Cutover-Key": "user-7"}) for _ in range(10)}
    assert len(sticky) == 1
    await set_mode(cohost, "modern")
    assert await split(cohost) == {"modern": 40}
    overview = (await cohost.admin.get("/_cutover/api")).json()
    route = next(r for r in overview["routes"] if r["template"] == "/v1/domains")
    assert route["mode"] == "modern" and route["next"] is None
    assert route["traffic"]["modern"] >= 40 + canary["modern"]


@asyncio_test
async def test_shadow_records_a_planted_difference_with_a_readable_diff(cohost: Running) -> None:
    async def off_by_one(request: Request) -> dict[str, Any]:
        body = await request.json()
        return {"domains": [body["text"].strip().lower()], "count": 2}  # the bug: count should be 1

    cohost.host.modern.router.routes.insert(0, APIRoute("/v1/domains", off_by_one, methods=["POST"]))
    await set_mode(cohost, "shadow")
    response = await cohost.http.post("/v1/domains", json={"text": "shadow.example.com"})
    assert response.json() == {"domains": ["shadow.example.com"], "count": 1}  # the client got legacy's answer
    await until(lambda: cohost.host.recorder.stats()["POST /v1/domains"]["different"] == 1, "the mismatch")
    listed = (await cohost.admin.get("/_cutover/api/mismatches", params={"route": "POST /v1/domains"})).json()
    assert len(listed["mismatches"]) == 1
    detail = (await cohost.admin.get(f"/_cutover/api/mismatches/{listed['mismatches'][0]['id']}")).json()
    assert "count" in detail["diff_text"] and "1" in detail["diff_text"] and "2" in detail["diff_text"]
    assert detail["request"]["path"] == "/v1/domains"
    assert detail["legacy"]["status"] == detail["modern"]["status"] == 200


@asyncio_test
async def test_modern_failing_in_shadow_never_reaches_the_client(cohost: Running) -> None:
    async def explodes(request: Request) -> None:
        raise RuntimeError("modern bug")

    cohost.host.modern.router.routes.insert(0, APIRoute("/v1/domains", explodes, methods=["POST"]))
    await set_mode(cohost, "shadow")
    response = await cohost.http.post("/v1/domains", json={"text": "safe.example.com"})
    assert response.status_code == 200 and response.headers["x-served-by"] == "legacy"
    await until(lambda: cohost.host.recorder.stats()["POST /v1/domains"]["different"] == 1, "the mismatch")


@asyncio_test
async def test_side_effects_are_mirrored_only_on_shadow_safe_routes(cohost: Running) -> None:
    response = await cohost.admin.post(
        "/_cutover/api/routes", json={"method": "POST", "template": "/v1/jobs", "mode": "shadow"}
    )
    assert response.status_code == 200
    submitted = await cohost.http.post("/v1/jobs", json={"kind": "domains", "text": "a.example.com"})
    assert submitted.status_code == 202 and submitted.headers["x-served-by"] == "legacy"
    stats = cohost.host.recorder.stats()["POST /v1/jobs"]
    assert stats["not_mirrored"] == 1 and stats["compared"] == 0
    listed = await cohost.http.get("/v1/jobs")  # only modern lists jobs; the plan leaves the route on legacy
    assert listed.status_code == 405 and listed.headers["x-served-by"] == "legacy"


@asyncio_test
async def test_the_admin_api_needs_the_token_in_a_header(cohost: Running) -> None:
    assert (await cohost.http.get("/_cutover/api")).status_code == 401
    wrong = await cohost.http.get("/_cutover/api", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    in_query = await cohost.http.get("/_cutover/api", params={"token": TOKEN})
    assert in_query.status_code == 400 and in_query.json()["error"]["code"] == "token_in_query"
    assert (await cohost.http.get("/_cutover/api", headers={"X-Cutover-Token": TOKEN})).status_code == 200
    bad = await cohost.admin.post("/_cutover/api/routes", json={"method": "POST", "template": "/v1/domains", "mode": "canery"})
    assert bad.status_code == 422 and "canery" in bad.json()["error"]["message"]


@asyncio_test
async def test_metrics_are_prometheus_text(cohost: Running) -> None:
    await cohost.http.post("/v1/domains", json={"text": "m.example.com"})
    await cohost.http.get("/status")
    text = (await cohost.admin.get("/_cutover/metrics")).text
    assert 'cutover_requests_total{route="POST /v1/domains",stack="legacy",status="200"}' in text
    assert 'cutover_request_seconds_bucket{le="0.001",route="GET /status",stack="modern"}' in text
    assert "cutover_pool_workers" in text and "cutover_loop_lag_seconds" in text


@asyncio_test
async def test_the_plan_reloads_and_moves_task_ownership(cohost: Running) -> None:
    cohost.plan_path.write_text(cohost.plan_path.read_text().replace('data_sync = "legacy"', 'data_sync = "modern"')
                                .replace('"POST /v1/ocr" = "legacy"', '"POST /v1/ocr" = { mode = "canary", percent = 25 }'))
    assert cohost.host.legacy.tasks.running("data_sync")
    response = await cohost.admin.post("/_cutover/api/reload")
    assert response.status_code == 200, response.text
    overview = response.json()
    assert overview["tasks"] == {"data_sync": "modern"}
    ocr = next(r for r in overview["routes"] if r["template"] == "/v1/ocr")
    assert (ocr["mode"], ocr["percent"]) == ("canary", 25)
    assert not cohost.host.legacy.tasks.running("data_sync")
    assert cohost.host.modern.state.tasks.state()["data_sync"]["running"]

    moved = await cohost.admin.post("/_cutover/api/tasks", json={"task": "data_sync", "owner": "legacy"})
    assert moved.status_code == 200 and moved.json()["tasks"] == {"data_sync": "legacy"}
    assert cohost.host.legacy.tasks.running("data_sync")
    assert not cohost.host.modern.state.tasks.state()["data_sync"]["running"]

    cohost.plan_path.write_text(cohost.plan_path.read_text() + '\n"GET /v1/nothing" = "modern"\n')
    refused = await cohost.admin.post("/_cutover/api/reload")
    assert refused.status_code == 422 and "/v1/nothing" in refused.json()["error"]["message"]
