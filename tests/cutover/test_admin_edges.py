"""The admin API's edges: every id and number parameter checked, labelled tokens, and a limit on wrong tokens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge import SharedPool
from bridge.host.admin import FailureLimiter
from bridge.testing import asyncio_fixture, asyncio_test
from tests.conftest import WAIT
from tests.cutover.conftest import TOKEN, Running, start_host

HUGE = "99999999999999999999999999"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/_cutover/api/history", {"limit": "0"}), ("/_cutover/api/history", {"limit": "501"}),
        ("/_cutover/api/history", {"limit": "ten"}), ("/_cutover/api/history", {"before": HUGE}),
        ("/_cutover/api/history", {"before": "-1"}), ("/_cutover/api/history", {"before": "1e3"}),
        ("/_cutover/api/history", {"route": "nonsense"}), ("/_cutover/api/series", {}),
        ("/_cutover/api/series", {"route": "GET status"}), ("/_cutover/api/series", {"route": "POST /v1/domains", "limit": "0"}),
        ("/_cutover/api/evidence", {"route": "get /x"}), ("/_cutover/api/mismatches", {"limit": HUGE}),
        ("/_cutover/api/mismatches", {"route": "x"}), ("/_cutover/api/mismatches/" + HUGE, {}),
        ("/_cutover/api/mismatches/0", {}), ("/_cutover/api/mismatches/-5", {}),
    ],
)
@asyncio_test
async def test_bad_ids_and_numbers_are_422(cohost: Running, path: str, params: dict[str, str]) -> None:
    response = await cohost.admin.get(path, params=params)
    assert response.status_code == 422, (path, params, response.text)
    error = response.json()["error"]
    assert error["code"] in ("invalid_parameter", "missing_field") and error["message"]


@asyncio_test
async def test_bad_move_bodies_are_4xx_and_unknown_routes_404(cohost: Running) -> None:
    for body, status in [
        ({"route": "POST /v1/domains", "force": "yes"}, 422), ({"route": "POST /v1/domains", "why": 5}, 422),
        ({"route": "POST /v1/domains", "why": "x" * 501}, 422), ({}, 422), ({"route": 3}, 422),
        ({"route": "GET /not/in/plan"}, 404),
    ]:
        response = await cohost.admin.post("/_cutover/api/promote", json=body)
        assert response.status_code == status, (body, response.text)
    for percent in (101, -1, "10", True):
        response = await cohost.admin.post("/_cutover/api/routes", json={
            "method": "POST", "template": "/v1/domains", "mode": "canary", "percent": percent, "force": True})
        assert response.status_code == 422, (percent, response.text)
    nan = await cohost.admin.post("/_cutover/api/routes", content=b'{"method": "POST", "template": "/v1/domains", '
                                  b'"mode": "canary", "percent": NaN, "force": true}', headers={"content-type": "application/json"})
    assert nan.status_code == 422, nan.text
    assert (await cohost.admin.get("/_cutover/api/evidence", params={"route": "GET /nope"})).status_code == 404
    back = await cohost.admin.post("/_cutover/api/rollback", json={"route": "POST /v1/domains"})
    assert back.status_code == 422 and "legacy already answers" in back.json()["error"]["message"]
    assert cohost.host.plan.route_for("POST", "/v1/domains").mode == "legacy"
    assert (await cohost.admin.get("/_cutover/api/history")).json()["changes"] == []


@pytest.fixture
@asyncio_fixture
async def limited(warm_pool: SharedPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.setenv("CUTOVER_VAR", str(tmp_path / "var"))
    host, server, serving, url = await start_host(warm_pool, tmp_path, admin_failure_burst=3,
                                                  admin_tokens={"alice": "alice-token"})
    try:
        yield url
    finally:
        server.should_exit = True
        await serving


@asyncio_test
async def test_wrong_tokens_meet_a_limit_per_client_with_retry_after(limited: str) -> None:
    async with httpx.AsyncClient(base_url=limited, timeout=WAIT) as http:
        for _ in range(3):
            assert (await http.get("/_cutover/api", headers={"Authorization": "Bearer guess"})).status_code == 401
        limited_answer = await http.get("/_cutover/api", headers={"Authorization": "Bearer guess"})
        assert limited_answer.status_code == 429, limited_answer.text
        assert limited_answer.json()["error"]["code"] == "too_many_attempts"
        wait = int(limited_answer.headers["retry-after"])
        assert 1 <= wait <= 2
        # while the address is limited, even the right token waits: guessing cannot go on in between
        assert (await http.get("/_cutover/api", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 429
        deadline = asyncio.get_running_loop().time() + WAIT
        while (await http.get("/_cutover/api", headers={"X-Cutover-Token": "alice-token"})).status_code == 429:
            assert asyncio.get_running_loop().time() < deadline, "the limit never lifted"
            await asyncio.sleep(0.1)
        # a labelled token's moves are recorded under its label
        moved = await http.post("/_cutover/api/promote", json={"route": "POST /v1/domains", "why": "mirror it"},
                                headers={"X-Cutover-Token": "alice-token"})
        assert moved.status_code == 200, moved.text
        change = moved.json()["change"]
        assert change["who"] == "alice" and change["to"]["mode"] == "shadow" and not change["forced"]


def test_the_limiter_refills_at_its_rate_and_forgets_the_oldest_clients() -> None:
    limiter = FailureLimiter(burst=2, per_second=0.5)
    assert limiter.retry_after("a", now=0) == 0
    limiter.failed("a", now=0)
    limiter.failed("a", now=0)
    assert limiter.retry_after("a", now=0) == 2 and limiter.retry_after("b", now=0) == 0
    assert limiter.retry_after("a", now=1.0) == 1 and limiter.retry_after("a", now=2.0) == 0
    with pytest.raises(ValueError):
        FailureLimiter(burst=0)
    small = FailureLimiter(burst=1)
    small.MAX_CLIENTS = 3
    for client in "wxyz":
        small.failed(client, now=0)
    assert small.retry_after("w", now=0) == 0 and small.retry_after("z", now=0) == 1


@asyncio_test
async def test_the_evidence_shows_the_noise_floor_only_where_the_recorder_measures_one(cohost: Running) -> None:
    def evidence() -> Any:
        return cohost.admin.get("/_cutover/api/evidence", params={"route": "POST /v1/domains"})

    first = (await evidence()).json()["routes"]["POST /v1/domains"]
    assert first["gate"]["step"] is None  # legacy -> shadow: free
    if not hasattr(cohost.host.recorder, "noise_floor"):
        assert first["evidence"]["parity"]["noise_floor"] is None  # not measured: nothing shown
    # the recorder's measurement (an instance attribute stands in for it, with or without one of its own)
    measured = {"samples": 40, "differing": 2, "fields": ["body.served_at"]}
    cohost.host.recorder.noise_floor = lambda route: measured if route == "POST /v1/domains" else None  # type: ignore[attr-defined]
    shown = (await evidence()).json()["routes"]["POST /v1/domains"]["evidence"]["parity"]["noise_floor"]
    assert shown == measured
    other = (await cohost.admin.get("/_cutover/api/evidence", params={"route": "GET /status"})).json()
    assert other["routes"]["GET /status"]["evidence"]["parity"]["noise_floor"] is None
