"""Shadow on stateful routes: legacy's job ids mapped to modern's, shadow jobs kept out of modern's real data.

The co-hosted service with the job routes in shadow: every mirrored copy
carries the shadow marker, so modern's jobs land in ``cutover.shadow.db``,
never in the real ``cutover.db``. The rows of the real tables are read before
and after, and must be the same; an ``Idempotency-Key`` first seen in shadow
must make a new job once the route is modern, not a replay.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge import SharedPool
from bridge.jobs import shadow_path
from bridge.testing import asyncio_fixture, asyncio_test
from tests.conftest import WAIT, until
from tests.cutover.conftest import PLAN, Running, serving_plan

JOBS = ("POST /v1/jobs", "GET /v1/jobs/{job_id}", "DELETE /v1/jobs/{job_id}")
TIMES = '["attempts", "created_at", "started_at", "finished_at"]'
#: The job routes start modern (so a real job can be made) and are shadow-safe when moved to shadow.
SHADOW_PLAN = PLAN.replace(
    '"POST /v1/jobs" = "legacy"',
    '"POST /v1/jobs" = { mode = "modern", shadow_safe = true, id_from = "job_id", shadow_write = "WRITE",'
    f' ignore = ["status", {TIMES[1:-1]}] }}',
).replace(
    '"GET /v1/jobs/{job_id}" = "legacy"',
    f'"GET /v1/jobs/{{job_id}}" = {{ mode = "modern", id_param = "job_id", settle = 30, ignore = {TIMES} }}',
).replace(
    '"DELETE /v1/jobs/{job_id}" = "legacy"',
    f'"DELETE /v1/jobs/{{job_id}}" = {{ mode = "modern", shadow_safe = true, id_param = "job_id", ignore = {TIMES} }}',
) + "\n[shadow]\naa_sample = 1.0\n"


@pytest.fixture
@asyncio_fixture
async def jobs_host(
    warm_pool: SharedPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[Running]:
    write = getattr(request, "param", "run")
    async with serving_plan(warm_pool, tmp_path, monkeypatch, SHADOW_PLAN.replace("WRITE", write)) as running:
        yield running


def rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the job tables, in a stable order."""
    with sqlite3.connect(db) as conn:
        return {
            "jobs": conn.execute("SELECT * FROM jobs ORDER BY id").fetchall(),
            "job_events": conn.execute("SELECT * FROM job_events ORDER BY seq").fetchall(),
        }


async def set_modes(run: Running, mode: str) -> None:
    for route in JOBS:
        method, template = route.split(" ")
        response = await run.admin.post("/_cutover/api/routes", json={"method": method, "template": template, "mode": mode,
                                                                     "force": True})  # no evidence gathered here
        assert response.status_code == 200, response.text


async def finished(run: Running, job_id: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        body = (await run.http.get(f"/v1/jobs/{job_id}")).json()
        if body["status"] not in ("queued", "running"):
            return body
        assert asyncio.get_running_loop().time() < deadline, f"job {job_id} did not finish"
        await asyncio.sleep(0.02)


def compared(run: Running, route: str) -> int:
    return run.host.recorder.stats().get(route, {}).get("compared", 0)


@asyncio_test
async def test_shadow_jobs_map_ids_and_leave_the_real_job_table_untouched(jobs_host: Running) -> None:
    run = jobs_host
    real_db = run.host.settings.var_dir / "cutover.db"
    # a real job, made while the routes are modern
    real = await run.http.post("/v1/jobs", json={"kind": "domains", "text": "real.example.com"},
                               headers={"Idempotency-Key": "real-1"})
    assert real.status_code == 202 and real.headers["x-served-by"] == "modern"
    await finished(run, real.json()["job_id"])
    before = rows(real_db)
    assert len(before["jobs"]) == 1

    await set_modes(run, "shadow")
    submitted = await run.http.post("/v1/jobs", json={"kind": "domains", "text": "a.example.com b.example.org"},
                                    headers={"Idempotency-Key": "shadow-1"})
    assert submitted.status_code == 202 and submitted.headers["x-served-by"] == "legacy"
    job_id = submitted.json()["job_id"]
    done = await finished(run, job_id)
    assert done["status"] == "succeeded"
    gone = await run.http.delete(f"/v1/jobs/{job_id}")
    assert gone.status_code == 409
    # a key the real namespace already has: legacy makes a new job, and so must the shadow copy (no replay)
    again = await run.http.post("/v1/jobs", json={"kind": "domains", "text": "c.example.com"},
                                headers={"Idempotency-Key": "real-1"})
    await finished(run, again.json()["job_id"])
    missing = await run.http.get("/v1/jobs/0123456789abcdef0123456789abcdef")  # legacy's 404: mirrored as it is
    assert missing.status_code == 404
    await until(lambda: compared(run, "POST /v1/jobs") == 2 and compared(run, "DELETE /v1/jobs/{job_id}") == 1
                and compared(run, "GET /v1/jobs/{job_id}") >= 3, "the shadow comparisons")
    await until(lambda: run.host.frontdoor is not None and not run.host.frontdoor._background, "comparisons to end")
    stats = run.host.recorder.stats()
    mismatches = await run.host.recorder.mismatches(None, 10)
    assert all(stats[route]["different"] == 0 for route in JOBS), "\n".join(f"{m['route']}: {m['diff_text']}" for m in mismatches)
    assert stats["GET /v1/jobs/{job_id}"]["unmapped"] == 0

    # modern's real rows are exactly as they were; the shadow jobs are in their own file, with their own keys
    assert rows(real_db) == before
    shadow = rows(shadow_path(real_db))
    assert sorted(row[13] for row in shadow["jobs"]) == ["real-1", "shadow-1"]  # idempotency_key column

    # once the route is modern, a key first seen in shadow makes a new job, not a replay of the shadow one
    await set_modes(run, "modern")
    fresh = await run.http.post("/v1/jobs", json={"kind": "domains", "text": "d.example.com"},
                                headers={"Idempotency-Key": "shadow-1"})
    assert fresh.status_code == 202 and "idempotent-replayed" not in fresh.headers
    assert fresh.json()["job_id"] not in {row[0] for row in shadow["jobs"]}
    replay = await run.http.post("/v1/jobs", json={"kind": "domains", "text": "real.example.com"},
                                 headers={"Idempotency-Key": "real-1"})
    assert replay.headers.get("idempotent-replayed") == "true" and replay.json()["job_id"] == real.json()["job_id"]


@pytest.mark.parametrize("jobs_host", ["validate"], indirect=True)
@asyncio_test
async def test_a_validated_write_does_no_work_and_its_followers_are_not_compared(jobs_host: Running) -> None:
    run = jobs_host
    await set_modes(run, "shadow")
    submitted = await run.http.post("/v1/jobs", json={"kind": "domains", "text": "v.example.com"})
    job_id = submitted.json()["job_id"]
    await finished(run, job_id)
    await until(lambda: compared(run, "POST /v1/jobs") == 1, "the submit's comparison")
    await until(lambda: run.host.recorder.stats().get("GET /v1/jobs/{job_id}", {}).get("unmapped", 0) >= 1,
                "the follower to be left out")
    assert run.host.recorder.stats()["POST /v1/jobs"]["different"] == 0
    shadow = rows(shadow_path(run.host.settings.var_dir / "cutover.db"))
    assert [row[2] for row in shadow["jobs"]] == ["queued"]  # recorded, never run
    assert [row[3] for row in shadow["job_events"]] == ["submitted"]
