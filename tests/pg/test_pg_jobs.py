"""Durable jobs on a real PostgreSQL server: several runners, heartbeat leases, migrations, an outage.

Each "replica" here is a store and a runner of its own (in this process, or a
child process the test SIGKILLs), all on one database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bridge import SharedPool
from bridge.database import open_job_store, parse_database_url
from bridge.errors import JobFinished, JobNotFound, SchemaError, StoreUnavailable
from bridge.jobrecord import JobRecord
from bridge.jobs import JobRunner, KindPolicy
from bridge.jobstore_pg import SCHEMA_VERSION, PostgresJobStore
from bridge.testing import asyncio_test
from tests.conftest import WAIT, Gate, process_gone
from tests.pg.conftest import PostgresServer, create_database
from tests.unit import jobfns
from tests.unit.test_jobs import finish, read_until, start_child

FUNCTIONS: dict[str, Callable[..., Any]] = {"echo": jobfns.echo, "gate": jobfns.wait_at_gate, "crunch": jobfns.crunch}
POLICIES = {kind: KindPolicy(timeout=WAIT) for kind in FUNCTIONS}
HOUR = 3600.0


def execute_on(pool: SharedPool, ran: list[tuple[str, str]] | None = None, name: str = "") -> Any:
    async def execute(record: JobRecord, payload: bytes, on_start: Callable[[], None]) -> Any:
        result = await pool.run(FUNCTIONS[record.kind], payload, on_start=on_start, **record.params)
        if ran is not None:
            ran.append((name, record.id))
        return result

    return execute


@contextlib.asynccontextmanager
async def replica(url: str, pool: SharedPool, *, ran: list[tuple[str, str]] | None = None, name: str = "",
                  lease_ttl: float = 30.0, concurrency: int = 2) -> AsyncIterator[tuple[PostgresJobStore, JobRunner]]:
    async with open_job_store(url, lease_ttl=lease_ttl) as store:
        runner = JobRunner(store, execute_on(pool, ran, name), policies=POLICIES, concurrency=concurrency,
                           poll_interval=HOUR)
        await runner.start()
        try:
            yield store, runner
        finally:
            await runner.stop(timeout=WAIT)


async def until(condition: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll an async condition until it gives something truthy, bounded by WAIT."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not (value := await condition()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {WAIT}s waiting for {what}")
        await asyncio.sleep(0.05)
    return value


async def settled(store: PostgresJobStore, job_id: str) -> JobRecord:
    async def final() -> JobRecord | None:
        record = await store.get(job_id)
        return record if record is not None and record.finished else None

    return await until(final, f"job {job_id} to finish")


def test_database_urls_are_parsed_or_refused_with_the_accepted_forms() -> None:
    assert parse_database_url("sqlite:///var/x.db").path == Path("var/x.db")
    assert parse_database_url("sqlite:////srv/x.db").path == Path("/srv/x.db")
    pg = parse_database_url("postgres://u:secret@db:5432/app")
    assert pg.engine == "postgresql" and pg.dsn == "postgresql://u:secret@db:5432/app"
    assert "secret" not in str(pg)
    for bad, says in [("mysql://x/y", "unsupported"), ("sqlite://x.db", "sqlite:///"), ("", "empty"),
                      ("postgresql:///app", "no host"), ("postgresql://u:pw@h:port/db", "invalid PostgreSQL")]:
        with pytest.raises(ValueError, match=says) as info:
            parse_database_url(bad)
        assert "pw" not in str(info.value)


@asyncio_test
async def test_a_job_runs_on_postgres_with_the_same_record_events_and_pages_as_on_sqlite(
        pg_url: str, pool: SharedPool, tmp_path: Path) -> None:
    async with replica(pg_url, pool) as (store, _runner):
        record, created = await store.submit("echo", b"hello", {"n": 1})
        assert created and record.status == "queued"
        done = await settled(store, record.id)
        assert done.status == "succeeded" and done.result["payload"] == "hello" and done.result["params"] == {"n": 1}
        assert [e["event"] for e in await store.events(record.id)] == ["submitted", "started", "succeeded"]
        # the same JSON shape as the SQLite store gives
        async with open_job_store(tmp_path / "same.db") as lite:
            other, _ = await lite.submit("echo", b"hello", {"n": 1})
            assert set(done.as_json()) - {"result"} == set(other.as_json())
        for i in range(5):
            await store.submit("echo", f"p{i}".encode(), {})
        page, cursor = await store.list(limit=4)
        rest, end = await store.list(limit=4, cursor=cursor)
        assert len(page) == 4 and cursor and end is None and len(rest) == 2
        assert [r.id for r in page + rest] == [r.id for r in (await store.list(limit=10))[0]]
        with pytest.raises(ValueError, match="invalid status"):
            await store.list(status="nope")
        with pytest.raises(JobNotFound):
            await store.events("missing")
        with pytest.raises(JobFinished):
            await store.cancel(record.id)


@asyncio_test
async def test_racing_submits_with_one_idempotency_key_from_three_replicas_make_one_job(pg_url: str) -> None:
    stores = [PostgresJobStore(pg_url) for _ in range(3)]
    async with contextlib.AsyncExitStack() as stack:
        for store in stores:
            await stack.enter_async_context(store)
        results = await asyncio.gather(*(stores[i % 3].submit("echo", b"x", {}, idempotency_key="key-1")
                                         for i in range(30)))
    assert len({record.id for record, _ in results}) == 1
    assert sum(created for _, created in results) == 1


@asyncio_test
async def test_three_replicas_share_the_queue_and_every_job_completes_exactly_once(
        pg_url: str, pool: SharedPool) -> None:
    ran: list[tuple[str, str]] = []
    async with contextlib.AsyncExitStack() as stack:
        replicas = [await stack.enter_async_context(replica(pg_url, pool, ran=ran, name=f"r{i}", concurrency=2))
                    for i in range(3)]
        submitter = replicas[0][0]
        jobs = [(await submitter.submit("echo", f"j{i}".encode(), {}))[0] for i in range(40)]
        for job in jobs:
            assert (await settled(replicas[2][0], job.id)).status == "succeeded"  # polled through another replica
        for job in jobs:
            names = Counter(e["event"] for e in await replicas[1][0].events(job.id))
            assert names == {"submitted": 1, "started": 1, "succeeded": 1}, (job.id, names)
    assert Counter(job_id for _, job_id in ran) == {job.id: 1 for job in jobs}


@asyncio_test
async def test_a_replica_hears_another_replicas_submit_without_polling(pg_url: str, pool: SharedPool) -> None:
    async with replica(pg_url, pool) as (_store, runner), PostgresJobStore(pg_url) as elsewhere:
        # The runner polls once an hour: only the NOTIFY can wake it.
        record, _ = await elsewhere.submit("echo", b"far", {})
        assert (await settled(elsewhere, record.id)).status == "succeeded"
        assert runner.state()["lease"] == "heartbeat"


@pytest.mark.subprocess
@asyncio_test
async def test_a_sigkilled_replica_mid_job_is_finished_by_another_after_its_lease_expires(
        pg_url: str, pool: SharedPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUTOVER_TEST_LEASE_TTL", "2")
    gate, log = Gate(tmp_path), []
    async with PostgresJobStore(pg_url) as store:
        record, _ = await store.submit("gate", b"held", {"started": gate.started, "gate": gate.gate})
        child = start_child(pg_url)  # type: ignore[arg-type]
        try:
            await read_until(child, "ready", log)
            worker = await gate.wait_started()

            async def marked() -> bool:  # the runner records the start a moment after the worker takes the call
                now = await store.get(record.id)
                return now is not None and now.status == "running" and now.attempt_started is True

            await until(marked, "the runner to record that the job's call started")
        finally:
            child.send_signal(signal.SIGKILL)
            await finish(child, log)
        await process_gone(worker)
        async with replica(pg_url, pool, lease_ttl=2) as (_mine, runner):
            await gate.wait_started()  # reclaimed after the dead replica's lease ran out, and running here
            await gate.open()
            done = await settled(store, record.id)
        assert done.status == "succeeded" and done.result == "held"
        events = await store.events(record.id)
        reclaimed = [e for e in events if e["event"] == "reclaimed"]
        assert len(reclaimed) == 1 and reclaimed[0]["detail"]["charged"] is True, events
        assert reclaimed[0]["detail"]["previous_runner"] != runner.id
        assert [e["event"] for e in events].count("succeeded") == 1


@asyncio_test
async def test_replicas_starting_at_once_migrate_once_and_a_newer_schema_is_refused(pg_server: PostgresServer) -> None:
    url = create_database(pg_server)
    stores = [PostgresJobStore(url) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        import psycopg

        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            rows = await (await conn.execute("SELECT component, version FROM cutover_schema")).fetchall()
            assert rows == [("jobs", SCHEMA_VERSION)]
            await conn.execute("UPDATE cutover_schema SET version = %s", (SCHEMA_VERSION + 1,))
    finally:
        await asyncio.gather(*(store.close() for store in stores))
    with pytest.raises(SchemaError, match=f"version {SCHEMA_VERSION + 1}, newer than this cutover's"):
        await PostgresJobStore(url).open()


@pytest.mark.subprocess
@asyncio_test
async def test_a_database_restart_loses_no_acknowledged_job_and_calls_fail_fast_meanwhile(
        own_pg_server: PostgresServer, pool: SharedPool) -> None:
    url = create_database(own_pg_server)
    async with replica(url, pool, lease_ttl=3) as (store, _runner):
        acknowledged = [(await store.submit("echo", f"a{i}".encode(), {}))[0] for i in range(10)]
        await asyncio.to_thread(own_pg_server.stop)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(StoreUnavailable, match="unreachable"):
            await store.submit("echo", b"lost", {})
        assert loop.time() - began < WAIT
        await asyncio.to_thread(own_pg_server.start)

        async def submitted() -> JobRecord | None:
            try:
                return (await store.submit("echo", b"after", {}))[0]
            except StoreUnavailable:
                return None

        after = await until(submitted, "submits to work again once the database is back")
        for job in [*acknowledged, after]:
            assert (await settled(store, job.id)).status == "succeeded"
        names = Counter()
        for job in acknowledged:
            names.update(e["event"] for e in await store.events(job.id))
        assert names["succeeded"] == len(acknowledged)
        payloads = json.dumps([r.id for r in (await store.list(limit=50))[0]])
        assert all(job.id in payloads for job in acknowledged)


@asyncio_test
async def test_a_fleet_lease_has_one_holder_stays_with_it_and_moves_when_it_goes_silent(pg_url: str) -> None:
    from bridge.fleet import FleetLease

    leases = [FleetLease(pg_url, "data_sync", ttl=1.0, holder=f"replica{i}") for i in range(3)]
    for lease in leases:
        await lease.open()
    try:
        taken = await asyncio.gather(*(lease.hold() for lease in leases))
        assert sum(taken) == 1
        first = leases[taken.index(True)]
        others = [lease for lease in leases if lease is not first]
        for _ in range(3):  # sticky: its holder renews it, the others keep being refused
            assert await first.hold()
            assert not any(await asyncio.gather(*(lease.hold() for lease in others)))
        assert await others[0].holder_now() == first.holder
        # the holder goes silent (dies): after the ttl, exactly one other takes over
        async def taken_over() -> list[bool] | None:
            result = await asyncio.gather(*(lease.hold() for lease in others))
            return result if any(result) else None

        after = await until(taken_over, "another replica to take the silent holder's lease")
        assert sum(after) == 1
        second = others[after.index(True)]
        second.ttl = 60.0  # renewed for long: what follows cannot race its expiry, however slow the machine
        assert await second.hold()
        assert not await first.hold()  # the old holder, back, does not get it back while the new one holds it
        await second.release()  # a clean stop hands over at once
        assert await first.hold()
        with pytest.raises(ValueError, match="ttl"):
            FleetLease(pg_url, "x", ttl=0)
    finally:
        for lease in leases:
            await lease.close()
