"""SIGTERM with 100 jobs in flight, then a restart on the same SQLite file: none lost, none completed twice."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest
from PIL import Image
from skimage import data as skdata

from bridge import JobStore
from bridge.testing import asyncio_test
from tests.conftest import WAIT, in_daemon_thread
from tests.modern.test_jobs import start_modern, url_of
from tests.reliability import record
from tests.synth import encode

JOBS = 100


async def stop_with_sigterm(child: subprocess.Popen[str], lines: list[str]) -> int:
    """SIGTERM, then wait for the process to exit by itself (bounded by WAIT); returns its exit status."""
    assert child.stdout is not None
    child.send_signal(signal.SIGTERM)
    lines.append(await in_daemon_thread(child.stdout.read))
    return await in_daemon_thread(child.wait)


async def statuses(http: httpx.AsyncClient) -> Counter[str]:
    page = (await http.get("/v1/jobs", params={"limit": 500})).json()
    return Counter(job["status"] for job in page["jobs"])


@pytest.mark.subprocess
@asyncio_test
async def test_sigterm_with_a_hundred_jobs_in_flight_then_restart_loses_none(tmp_path: Path) -> None:
    photo = encode(Image.fromarray(skdata.astronaut()).resize((192, 192)), "JPEG")  # a few ms of face detection
    lines: list[str] = []
    child = start_modern(tmp_path)
    try:
        url = await url_of(child, lines)
        async with httpx.AsyncClient(base_url=url, timeout=WAIT) as http:
            submitted = await asyncio.gather(
                *(http.post("/v1/jobs?kind=faces", content=photo, headers={"content-type": "image/jpeg"})
                  for _ in range(JOBS))
            )
            assert [r.status_code for r in submitted] == [202] * JOBS
            ids = [r.json()["job_id"] for r in submitted]
            while (seen := await statuses(http))["succeeded"] < 3:
                await asyncio.sleep(0.01)
        first_exit = await stop_with_sigterm(child, lines)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=WAIT)
    log = "".join(lines)
    # uvicorn re-raises the signal once shut down, so supervisors see how the process ended
    assert first_exit in (0, -signal.SIGTERM), log
    assert "cutover stopped" in log and "Traceback" not in log, log

    async with JobStore(tmp_path / "cutover.db") as store:  # what the clean shutdown left on disk
        left = Counter([(await store.get(job_id)).status for job_id in ids])  # type: ignore[union-attr]
    assert set(left) <= {"succeeded", "queued"}, left  # nothing left "running": every in-flight job was settled
    assert left["queued"] > 0, f"every job finished before the SIGTERM landed ({seen}): the restart would not be exercised"

    child = start_modern(tmp_path)
    try:
        url = await url_of(child, lines)
        async with httpx.AsyncClient(base_url=url, timeout=WAIT) as http:
            deadline = asyncio.get_running_loop().time() + 4 * WAIT
            while (now := await statuses(http))["succeeded"] < JOBS and not now["failed"]:
                assert asyncio.get_running_loop().time() < deadline, f"jobs did not all finish after the restart: {now}"
                await asyncio.sleep(0.05)
        await stop_with_sigterm(child, lines)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=WAIT)

    async with JobStore(tmp_path / "cutover.db") as store:
        final = Counter([(await store.get(job_id)).status for job_id in ids])  # type: ignore[union-attr]
        events = {job_id: Counter(e["event"] for e in await store.events(job_id)) for job_id in ids}
    once = sum(counts["succeeded"] == 1 for counts in events.values())
    record("faults", f"SIGTERM with {JOBS} jobs submitted, then restart", JOBS, once,
           f"{left['succeeded']} done before exit, {left['queued']} queued on disk, {sum(c['interrupted'] for c in events.values())} "
           f"interrupted; exit {first_exit}; {final['succeeded']} succeeded, each once")
    assert final == {"succeeded": JOBS}, final
    assert once == JOBS, {job_id: counts for job_id, counts in events.items() if counts["succeeded"] != 1}
    assert not any(counts["reclaimed"] for counts in events.values()), "a clean stop left jobs for the reclaim"
