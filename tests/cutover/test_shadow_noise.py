"""A/A noise, headers by rule, the catch-all, and a mixed traffic run over every route in shadow.

Goal of the run: on unmutated code, every route of the reference service in
shadow (jobs included, and the catch-all for what no route matches), legacy
asked a second time for every request it is safe to repeat, and 0 mismatches.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Request
from fastapi.routing import APIRoute

from bridge import SharedPool
from bridge.testing import asyncio_fixture, asyncio_test
from tests.api import test_contract as contract
from tests.conftest import WAIT, until
from tests.cutover.conftest import Running, serving_plan
from tests.synth import bursts, render, wav

TIMES = '"attempts", "created_at", "started_at", "finished_at"'
ALL_SHADOW = f"""
[apps]
legacy = "legacy.service:cohost"
modern = "modern.app:cohost"

[routes]
"GET /status" = {{ mode = "shadow", ignore = ["service", "version", "uptime_s", "pool", "tasks"], skip = ["jobs"] }}
"POST /v1/faces" = {{ mode = "shadow", shadow_safe = true }}
"POST /v1/ocr" = {{ mode = "shadow", shadow_safe = true }}
"POST /v1/audio/analyze" = {{ mode = "shadow", shadow_safe = true }}
"POST /v1/domains" = {{ mode = "shadow", shadow_safe = true }}
"POST /v1/jobs" = {{ mode = "shadow", shadow_safe = true, id_from = "job_id", ignore = ["status", {TIMES}] }}
"GET /v1/jobs/{{job_id}}" = {{ mode = "shadow", id_param = "job_id", settle = 30, ignore = [{TIMES}] }}
"DELETE /v1/jobs/{{job_id}}" = {{ mode = "shadow", shadow_safe = true, id_param = "job_id", ignore = [{TIMES}] }}
"*" = {{ mode = "shadow" }}

[shadow]
aa_sample = 1.0

[tasks]
data_sync = "legacy"
"""
#: /status compared with its counters left in: two legacy answers differ there, which the A/A pairs learn.
NOISY_STATUS = ALL_SHADOW.replace(
    '"GET /status" = { mode = "shadow", ignore = ["service", "version", "uptime_s", "pool", "tasks"], skip = ["jobs"] }',
    '"GET /status" = { mode = "shadow", ignore = ["service", "tasks"], skip = ["jobs"] }',
)
PNG = {"content-type": "image/png"}
WAV = wav(bursts(20.0, seconds=1.0))
OCR = render((320, 120), (20, 30, "HELLO"))


@pytest.fixture
@asyncio_fixture
async def shadowed(
    warm_pool: SharedPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[Running]:
    async with serving_plan(warm_pool, tmp_path, monkeypatch, getattr(request, "param", ALL_SHADOW)) as running:
        yield running


def stats(run: Running) -> dict[str, dict[str, Any]]:
    return run.host.recorder.stats()


async def settled(run: Running) -> None:
    """Every comparison started so far has ended."""
    assert run.host.frontdoor is not None
    await until(lambda: not run.host.frontdoor._background, "the shadow comparisons to end")


async def job_done(run: Running, job_id: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + WAIT
    while (body := (await run.http.get(f"/v1/jobs/{job_id}")).json())["status"] in ("queued", "running"):
        assert asyncio.get_running_loop().time() < deadline, f"job {job_id} did not finish"
        await asyncio.sleep(0.2)
    return body


async def mismatch_text(run: Running) -> str:
    return "\n".join(f"{m['route']} {m['path']}: {m['diff_text']}" for m in await run.host.recorder.mismatches(None, 20))


@asyncio_test
async def test_a_mixed_traffic_run_with_aa_has_no_mismatches_on_any_route(shadowed: Running) -> None:
    run = shadowed
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/status", {}),
        ("POST", "/v1/faces", {"content": contract.ASTRONAUT_PNG, "headers": PNG}),
        ("POST", "/v1/faces", {"content": b"not an image", "headers": PNG}),
        ("POST", "/v1/ocr", {"content": OCR, "headers": PNG}),
        ("POST", "/v1/audio/analyze?hop_ms=20", {"content": WAV, "headers": {"content-type": "audio/wav"}}),
        ("POST", "/v1/domains", {"json": {"text": contract.DOMAINS_TEXT}}),
        ("POST", "/v1/domains", {"json": {"txt": "missing field"}}),
        ("GET", "/nope", {}),
        ("GET", "/v1/faces", {}),  # 405, Allow compared as a set
        ("GET", "/v1/jobs/no-such-job", {}),
        ("DELETE", "/v1/jobs/no-such-job", {}),
    ]
    for method, path, kwargs in requests:
        response = await run.http.request(method, path, **kwargs)
        assert response.headers["x-served-by"] == "legacy"
        # copies run one at a time after the clients (the shadow lane), and past 8 waiting the rest are
        # skipped: let each one end, so that every route here is compared
        await settled(run)
    jobs = [
        {"json": {"kind": "domains", "text": "a.example.com b.example.org"}},
        {"json": {"kind": "faces", "data_base64": base64.b64encode(contract.ASTRONAUT_PNG).decode()}},
        {"params": {"kind": "audio", "hop_ms": "20"}, "content": WAV, "headers": {"content-type": "audio/wav"}},
        {"params": {"kind": "ocr"}, "content": b"junk", "headers": PNG},  # fails on both
    ]
    for submission in jobs:
        submitted = await run.http.post("/v1/jobs", **submission)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        await job_done(run, job_id)
        await settled(run)  # past 8 copies in flight the rest are skipped: let the polls' comparisons end first
        assert (await run.http.delete(f"/v1/jobs/{job_id}")).status_code == 409
    await settled(run)
    counts = stats(run)
    # every submit and every cancel compared (one more cancel: the unknown job)
    assert counts["POST /v1/jobs"]["compared"] == counts["DELETE /v1/jobs/{job_id}"]["compared"] - 1 == len(jobs), counts
    for route in ("GET /status", "POST /v1/faces", "POST /v1/ocr", "POST /v1/audio/analyze", "POST /v1/domains",
                  "POST /v1/jobs", "GET /v1/jobs/{job_id}", "DELETE /v1/jobs/{job_id}", "unrouted"):
        assert counts[route]["compared"] >= 1, (route, counts)
    assert all(c["different"] == 0 and c["errors"] == 0 for c in counts.values()), await mismatch_text(run)
    # legacy was asked twice wherever that is safe, and agreed with itself
    floor = run.host.recorder.noise_floor("POST /v1/domains")
    assert floor["samples"] == 2 and floor["differing"] == 0 and floor["fields"] == []
    assert run.host.recorder.noise_floor("POST /v1/jobs")["samples"] == 0  # it creates: never repeated
    overview = (await run.admin.get("/_cutover/api")).json()
    by_route = {f"{r['method']} {r['template']}": r for r in overview["routes"]}
    assert by_route["POST /v1/domains"]["noise_floor"]["samples"] == 2


@pytest.mark.parametrize("shadowed", [NOISY_STATUS], indirect=True)
@asyncio_test
async def test_aa_pairs_learn_the_noise_and_leave_it_out_of_the_diffs(shadowed: Running, tmp_path: Path) -> None:
    run = shadowed

    async def noisy() -> bool:
        await run.http.get("/status")
        await settled(run)
        return "body.uptime_s" in run.host.recorder.noise_floor("GET /status")["fields"]

    deadline = asyncio.get_running_loop().time() + WAIT
    while not await noisy():
        assert asyncio.get_running_loop().time() < deadline, "two legacy answers never differed in uptime_s"
    floor = run.host.recorder.noise_floor("GET /status")
    assert floor["differing"] >= 1 and floor["samples"] >= floor["differing"]
    before = stats(run)["GET /status"]
    for _ in range(3):
        await run.http.get("/status")
    await settled(run)
    after = stats(run)["GET /status"]
    assert after["compared"] == before["compared"] + 3
    # what differs legacy-vs-legacy is never reported legacy-vs-modern
    for mismatch in await run.host.recorder.mismatches("GET /status", 50):
        assert "uptime_s" not in mismatch["diff_text"], mismatch["diff_text"]
    # cutover status shows the noise floor next to the mismatch rate, from the store
    await run.host.recorder.save_summary()
    with sqlite3.connect(run.host.settings.var_dir / "cutover.db") as conn:
        [(samples, differing, fields)] = conn.execute(
            "SELECT aa_samples, aa_differing, noise_fields FROM shadow_routes WHERE route = 'GET /status'").fetchall()
    assert samples >= differing >= 1 and "body.uptime_s" in json.loads(fields)


@asyncio_test
async def test_headers_by_rule_and_the_catch_all_find_a_changed_allow(shadowed: Running) -> None:
    run = shadowed

    async def put_faces(request: Request) -> dict[str, str]:
        return {}

    await run.http.get("/v1/faces")  # unrouted, shadowed by the catch-all: the same 405 and Allow
    await settled(run)
    assert stats(run)["unrouted"]["equal"] == 1
    # a port that adds a method changes the Allow of the path's 405
    run.host.modern.router.routes.insert(0, APIRoute("/v1/faces", put_faces, methods=["PUT"]))
    run.host.modern.openapi_schema = None  # modern reads the methods per path from its schema, once
    run.host.modern.state._method_patterns = None
    response = await run.http.get("/v1/faces")
    assert response.status_code == 405 and response.headers["allow"] == "POST"  # the client got legacy's answer
    await settled(run)
    assert stats(run)["unrouted"]["different"] == 1
    [mismatch] = await run.host.recorder.mismatches("unrouted", 5)
    assert mismatch["diff_text"].splitlines()[0] == "headers.allow: legacy POST, modern POST, PUT"
