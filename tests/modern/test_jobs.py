"""What modern adds to the job API: listing, idempotent submits, and jobs that survive a kill."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from skimage import data as skdata

from bridge import JobStore, SharedPool
from bridge.testing import asyncio_fixture, asyncio_test
from tests.api.conftest import ModernServer
from tests.conftest import WAIT, in_daemon_thread
from tests.synth import encode

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
@asyncio_fixture
async def modern(warm_pool: SharedPool, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    server = ModernServer(warm_pool, tmp_path)
    url = await server.start()
    try:
        async with httpx.AsyncClient(base_url=url, timeout=WAIT) as http:
            yield http
    finally:
        await server.stop()


@asyncio_test
async def test_jobs_are_listed_newest_first_with_filters_and_cursor(modern: httpx.AsyncClient) -> None:
    ids = []
    for i in range(7):
        response = await modern.post("/v1/jobs", json={"kind": "domains", "text": f"n{i}.example.com"})
        ids.append(response.json()["job_id"])
    bad = await modern.post("/v1/jobs", json={"kind": "domains", "text": " "})
    await until_all_finished(modern, [*ids, bad.json()["job_id"]])

    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 3, "status": "succeeded"}
        if cursor:
            params["cursor"] = cursor
        page = (await modern.get("/v1/jobs", params=params)).json()
        seen += [job["job_id"] for job in page["jobs"]]
        assert all(job["status"] == "succeeded" for job in page["jobs"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    failed = (await modern.get("/v1/jobs", params={"status": "failed"})).json()["jobs"]
    assert [job["error"]["code"] for job in failed] == ["empty_input"]
    for params in ({"status": "lost"}, {"limit": 0}, {"limit": 501}, {"cursor": "not-a-cursor"}):
        response = await modern.get("/v1/jobs", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"]["code"] == "invalid_parameter"


async def until_all_finished(http: httpx.AsyncClient, ids: list[str]) -> None:
    async def finished() -> bool:
        bodies = await asyncio.gather(*(http.get(f"/v1/jobs/{i}") for i in ids))
        return all(b.json()["status"] in ("succeeded", "failed", "cancelled") for b in bodies)

    deadline = asyncio.get_running_loop().time() + WAIT
    while not await finished():
        assert asyncio.get_running_loop().time() < deadline, "jobs did not finish"
        await asyncio.sleep(0.02)


@asyncio_test
async def test_an_idempotency_key_returns_the_existing_job(modern: httpx.AsyncClient) -> None:
    body = {"kind": "domains", "text": "once.example.com"}
    first, again = [
        await modern.post("/v1/jobs", json=body, headers={"Idempotency-Key": "order-17"}) for _ in range(2)
    ]
    assert first.status_code == again.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    concurrent = await asyncio.gather(
        *(modern.post("/v1/jobs", json=body, headers={"Idempotency-Key": "order-18"}) for _ in range(5))
    )
    assert len({r.json()["job_id"] for r in concurrent}) == 1
    other = await modern.post("/v1/jobs", json=body, headers={"Idempotency-Key": "order-19"})
    assert other.json()["job_id"] != first.json()["job_id"]


@asyncio_test
async def test_the_openapi_schema_documents_the_contract(modern: httpx.AsyncClient) -> None:
    schema = (await modern.get("/openapi.json")).json()
    paths = schema["paths"]
    for path, method in [
        ("/status", "get"), ("/v1/faces", "post"), ("/v1/ocr", "post"), ("/v1/audio/analyze", "post"),
        ("/v1/domains", "post"), ("/v1/jobs", "post"), ("/v1/jobs", "get"), ("/v1/jobs/{job_id}", "get"),
        ("/v1/jobs/{job_id}", "delete"),
    ]:
        assert method in paths[path], (path, method)
    faces = paths["/v1/faces"]["post"]
    assert {"image/png", "image/jpeg", "multipart/form-data"} <= set(faces["requestBody"]["content"])
    assert {"200", "413", "415", "422"} <= set(faces["responses"])
    assert "ErrorBody" in schema["components"]["schemas"]


def start_modern(var: Path) -> subprocess.Popen[str]:
    """``cutover serve --only modern`` in a child process, one worker (CUTOVER_CPUS=2)."""
    env = {**os.environ, "CUTOVER_CPUS": "2", "CUTOVER_VAR": str(var)}
    return subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "serve", "--only", "modern", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env,
    )


async def url_of(child: subprocess.Popen[str], lines: list[str]) -> str:
    assert child.stdout is not None
    while True:
        line = await in_daemon_thread(child.stdout.readline)
        assert line, "the server exited before listening:\n" + "".join(lines)
        lines.append(line)
        found = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
        if found:
            return found.group(1)


@pytest.mark.subprocess
@asyncio_test
async def test_fifty_jobs_survive_a_sigkill_and_each_succeeds_exactly_once(tmp_path: Path) -> None:
    photo = encode(skdata.astronaut(), "JPEG")  # about 0.1 s of face detection per job on one worker
    lines: list[str] = []
    child = start_modern(tmp_path)
    try:
        url = await url_of(child, lines)
        async with httpx.AsyncClient(base_url=url, timeout=WAIT) as http:
            submitted = await asyncio.gather(
                *(http.post("/v1/jobs?kind=faces", content=photo, headers={"content-type": "image/jpeg"}) for _ in range(50))
            )
            assert all(response.status_code == 202 for response in submitted)
            ids = [response.json()["job_id"] for response in submitted]

            async def succeeded() -> int:
                page = (await http.get("/v1/jobs", params={"status": "succeeded", "limit": 500})).json()
                return len(page["jobs"])

            while (done := await succeeded()) < 3:
                await asyncio.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        assert done < 50, "every job finished before the kill: the restart would not be exercised"
    finally:
        child.kill()
        child.wait(timeout=60)

    child = start_modern(tmp_path)
    try:
        url = await url_of(child, lines)
        async with httpx.AsyncClient(base_url=url, timeout=WAIT) as http:
            async def all_succeeded() -> bool:
                try:
                    bodies = await asyncio.gather(*(http.get(f"/v1/jobs/{i}") for i in ids))
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    # a pooled keep-alive connection the server closed as the request went out
                    # (its idle timeout, on a slow machine): not the jobs' fault; ask again
                    return False
                return all(b.json()["status"] == "succeeded" for b in bodies)

            deadline = asyncio.get_running_loop().time() + 4 * WAIT
            while not await all_succeeded():
                assert asyncio.get_running_loop().time() < deadline, "jobs did not all succeed after the restart"
                await asyncio.sleep(0.05)
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    finally:
        child.kill()
        child.wait(timeout=60)

    async with JobStore(tmp_path / "cutover.db") as store:
        events = {job_id: Counter(e["event"] for e in await store.events(job_id)) for job_id in ids}
    assert all(counts["succeeded"] == 1 for counts in events.values()), events
    assert any(counts["reclaimed"] for counts in events.values()), "no job was reclaimed after the kill"
