"""Three real ``cutover serve`` replicas of the reference service on one PostgreSQL database.

Each replica has its own folder (``CUTOVER_VAR``: its shadow store, its pool)
and the same ``CUTOVER_DATABASE``; the job routes are in modern mode, so the
jobs live in PostgreSQL and any replica answers for any job.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bridge.jobstore_pg import PostgresJobStore
from bridge.testing import asyncio_test
from tests.conftest import WAIT
from tests.ownservice.conftest import Served, serve

REPO = Path(__file__).resolve().parents[2]
TEXT = "see https://example.org/a and http://sub.example.com/b\n" * 20


def replica_plan(folder: Path) -> Path:
    """The repository's plan, with the job routes and /status on modern, and the apps found in the repository."""
    plan = (REPO / "cutover.toml").read_text()
    plan = plan.replace('pool_initializer = "workloads:warm_up"', f'app_dir = "{REPO}"')  # domains jobs need no models
    plan = plan.replace('"GET /status" = { mode = "legacy"', '"GET /status" = { mode = "modern"')
    plan = re.sub(r'^("(?:POST|GET|DELETE) /v1/jobs[^"]*") = .*$', r'\1 = "modern"', plan, flags=re.MULTILINE)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cutover.toml"
    path.write_text(plan)
    return path


@pytest.fixture
def replicas(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Served]]:
    monkeypatch.setenv("CUTOVER_DATABASE", pg_url)
    plan = replica_plan(tmp_path / "plan")
    started: list[Served] = []
    try:
        for i in range(3):
            started.append(serve(plan, tmp_path / f"replica{i}"))
        yield started
    finally:
        outputs = [served.stop() for served in started]  # every replica stopped before any is judged
        for output in outputs:
            assert "Traceback" not in output, output


def poll(client: httpx.Client, job_id: str) -> dict[str, object]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        answer = client.get(f"/v1/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        if answer.json()["status"] in ("succeeded", "failed", "cancelled"):
            return answer.json()  # type: ignore[no-any-return]
        time.sleep(0.05)  # polling the job over HTTP: the condition itself, every 50 ms
    raise AssertionError(f"job {job_id} did not finish within {WAIT} s")


@pytest.mark.subprocess
@asyncio_test
async def test_a_job_submitted_through_one_replica_is_polled_through_the_others_and_runs_once(
        replicas: list[Served], pg_url: str) -> None:
    clients = [httpx.Client(base_url=r.url, timeout=WAIT) for r in replicas]
    try:
        submitted = []
        for i in range(6):
            answer = await asyncio.to_thread(
                clients[i % 3].post, "/v1/jobs", json={"kind": "domains", "text": TEXT + str(i)},
                headers={"Idempotency-Key": f"replicas-{i}"})
            assert answer.status_code == 202, answer.text
            assert answer.headers["X-Served-By"] == "modern"
            submitted.append(answer.json()["job_id"])
        # the same key again, through another replica: the same job, marked as a replay
        again = await asyncio.to_thread(clients[1].post, "/v1/jobs", json={"kind": "domains", "text": TEXT + "0"},
                                        headers={"Idempotency-Key": "replicas-0"})
        assert again.status_code == 202 and again.json()["job_id"] == submitted[0]
        assert again.headers.get("Idempotent-Replayed") == "true"
        for i, job_id in enumerate(submitted):
            done = await asyncio.to_thread(poll, clients[(i + 1) % 3], job_id)
            assert done["status"] == "succeeded", done
            assert "example.org" in str(done["result"])
        status = (await asyncio.to_thread(clients[2].get, "/status")).json()
        assert status["jobs"]["store"] == {"engine": "postgresql", "state": "ok"}
        assert status["jobs"]["lease"] == "heartbeat"
    finally:
        for client in clients:
            client.close()
    async with PostgresJobStore(pg_url) as store:
        for job_id in submitted:
            names = Counter(e["event"] for e in await store.events(job_id))
            assert names["succeeded"] == 1 and names["failed"] == 0, (job_id, names)
        listed, _ = await store.list(limit=50)
        assert sorted(r.id for r in listed) == sorted(submitted)


def processed(replica: Served) -> bool:
    """The replica's data_sync has written an output for the file in its own inbox."""
    return any((replica.log.parent / "var" / "outbox" / "domains").glob("*.json"))


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {WAIT} s waiting for {what}"
        time.sleep(0.1)  # polling files and logs the replicas write: the condition itself


def lease_row(url: str) -> tuple[str, float] | None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        try:
            row = conn.execute("SELECT holder, expires_at FROM task_leases WHERE name = 'data_sync'").fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return (row[0], row[1]) if row else None


@pytest.mark.subprocess
def test_data_sync_runs_on_exactly_one_replica_and_moves_when_that_replica_dies(
        replicas: list[Served], pg_url: str) -> None:
    # Each replica has an inbox file of its own: only the lease holder's is processed.
    for i, replica in enumerate(replicas):
        inbox = replica.log.parent / "var" / "inbox" / "domains"
        inbox.mkdir(parents=True, exist_ok=True)
        (inbox / f"r{i}.txt").write_text(TEXT)
    wait_for(lambda: any(processed(r) for r in replicas), "one replica to run data_sync")
    [holder] = [r for r in replicas if processed(r)]
    others = [r for r in replicas if r is not holder]
    row = lease_row(pg_url)
    assert row is not None and f":{holder.process.pid}:" in row[0], (row, holder.process.pid)
    # The holder renews its lease each round; two renewals later, every replica has had its rounds
    # (same interval), and the lease never moved: the others skipped.
    renewals: list[float] = [row[1]]

    def renewed_twice() -> bool:
        now = lease_row(pg_url)
        assert now is not None and now[0] == row[0], now
        if now[1] > renewals[-1]:
            renewals.append(now[1])
        return len(renewals) >= 3

    wait_for(renewed_twice, "the holder to renew its lease twice")
    assert not any(processed(r) for r in others)

    holder.process.send_signal(signal.SIGKILL)
    holder.process.wait(timeout=WAIT)
    wait_for(lambda: any(processed(r) for r in others), "another replica to take data_sync over")
    assert sum(processed(r) for r in others) == 1
    moved = lease_row(pg_url)
    assert moved is not None and moved[0] != row[0]


@pytest.mark.subprocess
def test_a_route_moved_on_one_replica_moves_on_every_replica_and_the_fleet_is_listed(replicas: list[Served]) -> None:
    route = "POST /v1/domains"
    clients = [httpx.Client(base_url=r.url, timeout=WAIT) for r in replicas]
    try:
        for client in clients:
            answer = client.post("/v1/domains", json={"text": TEXT})
            assert answer.status_code == 200 and answer.headers["X-Served-By"] == "legacy", answer.text
        with replicas[0].admin() as admin:
            moved = admin.post("/_cutover/api/routes", json={"method": "POST", "template": "/v1/domains", "mode": "modern", "force": True,
                                                             "why": "fleet test"})
            assert moved.status_code == 200, moved.text
        for client in clients[1:]:
            wait_for(lambda c=client: c.post("/v1/domains", json={"text": TEXT}).headers["X-Served-By"] == "modern",
                     "another replica to answer by the new mode")
        with replicas[2].admin() as admin:
            changes = admin.get("/_cutover/api/history").json()["changes"]
            assert changes[0]["key"] == route and changes[0]["to"]["mode"] == "modern"
            assert changes[0]["forced"] is True and changes[0]["why"] == "fleet test"
            fleet = admin.get("/_cutover/api/fleet").json()
            assert fleet["shared"] is True
            alive = [r for r in fleet["replicas"] if r["alive"]]
            assert len(alive) == 3 and sum(r["this"] for r in alive) == 1
            assert {r["pid"] for r in alive} == {r.process.pid for r in replicas}
    finally:
        for client in clients:
            client.close()
