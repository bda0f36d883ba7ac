"""Durable jobs: a real SQLite file, the real shared pool, and real processes killed mid-way.

Runners here poll once an hour: every wake-up a test waits for must come from
a submit's notify or a retry's timer, never from the safety poll.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge import JobRecord, JobStore, SharedPool
from bridge import jobstore as bridge_jobstore
from bridge.errors import JobFinished, JobNotFound
from bridge.jobs import JobRunner, KindPolicy
from bridge.testing import asyncio_fixture, asyncio_test
from tests.conftest import WAIT, Gate, in_daemon_thread, process_gone, until
from tests.reliability import record as record_row
from tests.unit import jobfns

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).parent / "scripts" / "jobs_runner.py"
HOUR = 3600.0

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "echo": jobfns.echo,
    "reject": jobfns.reject,
    "explode": jobfns.explode,
    "unjsonable": jobfns.unjsonable,
    "crash_first": jobfns.crash_first,
    "crash_always": jobfns.crash_always,
    "touch": jobfns.touch,
    "gate": jobfns.wait_at_gate,
    "strict_gate": jobfns.wait_at_gate,
    "patient_gate": jobfns.wait_at_gate,
}


def policies(**overrides: KindPolicy) -> dict[str, KindPolicy]:
    return {**{kind: KindPolicy(timeout=WAIT) for kind in FUNCTIONS}, **overrides}


def on_pool(pool: SharedPool) -> Callable[[JobRecord, bytes, Callable[[], None]], Awaitable[Any]]:
    return lambda record, payload, on_start: pool.run(FUNCTIONS[record.kind], payload, on_start=on_start,
                                                      **record.params)


def gate_params(gate: Gate) -> dict[str, str]:
    return {"started": gate.started, "gate": gate.gate}


@pytest.fixture
@asyncio_fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    async with JobStore(tmp_path / "var" / "cutover.db") as opened:
        yield opened


@contextlib.asynccontextmanager
async def running(
    store: JobStore, pool: SharedPool, *, concurrency: int = 2, **kwargs: Any
) -> AsyncIterator[JobRunner]:
    kwargs.setdefault("policies", policies())
    kwargs.setdefault("poll_interval", HOUR)
    runner = JobRunner(store, on_pool(pool), concurrency=concurrency, **kwargs)
    await runner.start()
    try:
        if runner.state()["state"] == "running":
            # Let every worker claim what is there and go to sleep, so the jobs
            # a test submits next must wake them (their timers are an hour long).
            await until(lambda: runner.state()["idle"] + runner.state()["running"] == concurrency, "workers to settle")
        yield runner
    finally:
        await runner.stop(timeout=0)


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """:func:`tests.conftest.until` for conditions that read the database."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {WAIT}s waiting for {what}")
        await asyncio.sleep(0.02)


async def settled(store: JobStore, job_id: str, *statuses: str) -> JobRecord:
    """Wait until the job reaches one of ``statuses`` (by default any final one)."""
    wanted = statuses or ("succeeded", "failed", "cancelled")
    record: JobRecord | None = None

    async def reached() -> bool:
        nonlocal record
        record = await store.get(job_id)
        return record is not None and record.status in wanted

    await eventually(reached, f"job {job_id} to be {' or '.join(wanted)}")
    assert record is not None
    return record


async def event_names(store: JobStore, job_id: str) -> list[str]:
    return [event["event"] for event in await store.events(job_id)]


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


# ---------------------------------------------------------------------- lifecycle and outcomes


@asyncio_test
async def test_a_job_goes_queued_running_succeeded_with_an_event_for_each(
    store: JobStore, pool: SharedPool, gate: Gate, tmp_path: Path
) -> None:
    record, created = await store.submit("gate", b"hello", gate_params(gate))
    assert created
    assert len(record.id) == 32 and int(record.id, 16) >= 0
    assert record.as_json() == {
        "job_id": record.id, "kind": "gate", "status": "queued", "attempts": 0,
        "created_at": record.created_at, "started_at": None, "finished_at": None,
    }
    assert at(record.created_at).utcoffset() == timedelta(0)
    assert record.created_at.endswith("+00:00") and len(record.created_at.split(".")[1]) == len("123+00:00")
    assert await store.get(record.id) == record
    assert await store.payload(record.id) == b"hello"
    assert await event_names(store, record.id) == ["submitted"]

    async with running(store, pool) as runner:
        pid = await gate.wait_started()
        busy = await store.get(record.id)
        assert busy is not None
        assert (busy.status, busy.attempts, busy.finished_at) == ("running", 1, None)
        assert busy.started_at is not None and at(busy.started_at) >= at(busy.created_at)
        assert "result" not in busy.as_json() and "error" not in busy.as_json()
        assert runner.state()["running"] == 1 and runner.state()["lease"] == "held"
        await gate.open()
        done = await settled(store, record.id)
        # The store shows the commit before the runner, resumed after it, counts the completion.
        await until(lambda: runner.state()["completed"] == 1, "the runner to count the completion")
        state = runner.state()

    assert done.as_json() == {
        "job_id": record.id, "kind": "gate", "status": "succeeded", "attempts": 1,
        "created_at": record.created_at, "started_at": busy.started_at, "finished_at": done.finished_at,
        "result": "hello",
    }
    assert done.finished_at is not None and at(done.finished_at) >= at(busy.started_at)
    events = await store.events(record.id)
    assert [e["event"] for e in events] == ["submitted", "started", "succeeded"]
    assert events[1]["detail"] == {"attempt": 1, "runner": runner.id}
    assert [at(e["at"]) for e in events] == sorted(at(e["at"]) for e in events)
    assert (state["claimed"], state["completed"], state["failed"], state["running"]) == (1, 1, 0, 0)
    assert json.loads(json.dumps(state)) == state
    assert pid != os.getpid()
    with sqlite3.connect(tmp_path / "var" / "cutover.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@asyncio_test
async def test_invalid_input_fails_the_job_at_once_without_retry(store: JobStore, pool: SharedPool) -> None:
    async with running(store, pool) as runner:
        record, _ = await store.submit("reject", b"", {"code": "empty_input", "message": "the text is empty"})
        failed = await settled(store, record.id)
    assert failed.status == "failed" and failed.attempts == 1
    assert failed.error == {"code": "empty_input", "message": "the text is empty"}
    assert failed.as_json()["error"] == failed.error and "result" not in failed.as_json()
    assert await event_names(store, record.id) == ["submitted", "started", "failed"]
    assert (runner.state()["failed"], runner.state()["retried"]) == (1, 0)


@asyncio_test
async def test_a_bug_fails_the_job_as_internal_error_and_logs_the_worker_traceback(
    store: JobStore, pool: SharedPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="bridge.jobs")
    async with running(store, pool) as runner:
        bug, _ = await store.submit("explode", b"x", {})
        not_json, _ = await store.submit("unjsonable", b"raw bytes", {})
        unknown, _ = await store.submit("no_such_kind", b"", {})
        outcomes = [await settled(store, job.id) for job in (bug, not_json, unknown)]
    for job in outcomes:
        assert job.status == "failed" and job.attempts == 1
        assert job.error == {"code": "internal_error", "message": "the job failed; see the service log"}
        assert await event_names(store, job.id) == ["submitted", "started", "failed"]
    logged = {r.getMessage().split()[1]: r for r in caplog.records}
    assert set(logged) == {bug.id, not_json.id, unknown.id}
    assert "in explode" in caplog.text and "bug while handling" in caplog.text  # the worker's own traceback
    assert "is not JSON" in caplog.text
    assert "no policy for job kind 'no_such_kind'" in caplog.text
    assert runner.state()["failed"] == 3


@asyncio_test
async def test_a_worker_crash_is_retried_after_its_backoff_then_succeeds(
    store: JobStore, pool: SharedPool, tmp_path: Path
) -> None:
    marker = tmp_path / "crashed-once"
    crash_once = KindPolicy(timeout=WAIT, max_attempts=3, backoff_initial=0.2)
    async with running(store, pool, policies=policies(crash_first=crash_once)) as runner:
        record, _ = await store.submit("crash_first", b"", {"marker": str(marker)})
        done = await settled(store, record.id)
    assert (done.status, done.result, done.attempts, done.error) == ("succeeded", "survived", 2, None)
    events = await store.events(record.id)
    assert [e["event"] for e in events] == ["submitted", "started", "retry", "started", "succeeded"]
    retry = events[2]
    assert retry["detail"]["reason"] == "worker_crashed" and retry["detail"]["delay"] == 0.2
    assert "SIGKILL" in retry["detail"]["message"]
    assert at(events[3]["at"]) - at(retry["at"]) >= timedelta(seconds=0.2 - 0.002)  # it waited its backoff
    assert marker.read_text() != str(os.getpid())
    assert pool.stats().crashed == 1
    assert (runner.state()["retried"], runner.state()["completed"]) == (1, 1)


@asyncio_test
async def test_a_full_pool_is_retried_like_a_crash_not_failed(store: JobStore, gate: Gate) -> None:
    """PoolBusy (and PoolUnavailable) say nothing about the job: it waits its backoff and runs once there is room."""
    async with SharedPool(processes=1, cpus=2, max_queued=1, max_waiting=0) as small:
        blocker = asyncio.ensure_future(small.run(jobfns.wait_at_gate, b"", gate.started, gate.gate))
        await gate.wait_started()
        filler = asyncio.ensure_future(small.run(jobfns.echo, b"filler"))  # takes the one queue slot
        patient = KindPolicy(timeout=WAIT, max_attempts=1000, backoff_initial=0.01, backoff_max=0.05)

        def refuse_when_full(record: JobRecord, payload: bytes, on_start: Callable[[], None]) -> Awaitable[Any]:
            return small.run(FUNCTIONS[record.kind], payload, block=False, on_start=on_start, **record.params)

        runner = JobRunner(store, refuse_when_full, concurrency=1, policies=policies(echo=patient), poll_interval=HOUR)
        await runner.start()
        try:
            record, _ = await store.submit("echo", b"hi", {})

            async def refused_once() -> bool:
                return any(e["event"] == "retry" for e in await store.events(record.id))

            await eventually(refused_once, "the job to be refused by the full pool")
            await gate.open()
            done = await settled(store, record.id)
        finally:
            await runner.stop(timeout=0)
        await asyncio.gather(blocker, filler)
    assert done.status == "succeeded" and done.attempts >= 2
    retries = [e["detail"] for e in await store.events(record.id) if e["event"] == "retry"]
    assert retries and {r["reason"] for r in retries} == {"busy"}
    assert "queue is full" in retries[0]["message"]


@asyncio_test
async def test_a_job_that_always_crashes_fails_after_max_attempts(store: JobStore, pool: SharedPool) -> None:
    doomed = KindPolicy(timeout=WAIT, max_attempts=3, backoff_initial=0.01, backoff_max=0.015)
    async with running(store, pool, policies=policies(crash_always=doomed)):
        record, _ = await store.submit("crash_always", b"", {})
        failed = await settled(store, record.id)
    assert (failed.status, failed.attempts, failed.error["code"]) == ("failed", 3, "worker_crashed")  # type: ignore[index]
    assert "gave up after 3 attempts" in failed.error["message"]  # type: ignore[index]
    events = await store.events(record.id)
    assert [e["event"] for e in events] == [
        "submitted", "started", "retry", "started", "retry", "started", "failed"
    ]
    assert [e["detail"]["delay"] for e in events if e["event"] == "retry"] == [0.01, 0.015]
    assert pool.stats().crashed == 3


@asyncio_test
async def test_a_timeout_fails_the_job_and_kills_its_worker(
    store: JobStore, pool: SharedPool, gate: Gate
) -> None:
    async with running(store, pool, policies=policies(gate=KindPolicy(timeout=0.3))):
        record, _ = await store.submit("gate", b"", gate_params(gate))
        pid = await gate.wait_started()
        failed = await settled(store, record.id)
        await process_gone(pid)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.error == {"code": "timeout", "message": "the job did not finish within 0.3s"}
    assert await event_names(store, record.id) == ["submitted", "started", "failed"]


@asyncio_test
async def test_a_timeout_is_retried_only_when_the_policy_says_so(
    store: JobStore, pool: SharedPool, gate: Gate
) -> None:
    retried = KindPolicy(timeout=0.3, retry_on_timeout=True, max_attempts=2, backoff_initial=0.01)
    async with running(store, pool, policies=policies(gate=retried)) as runner:
        record, _ = await store.submit("gate", b"", gate_params(gate))
        first = await gate.wait_started()
        second = await gate.wait_started()
        failed = await settled(store, record.id)
        await process_gone(first)
        await process_gone(second)
    assert first != second
    assert (failed.status, failed.attempts, failed.error["code"]) == ("failed", 2, "timeout")  # type: ignore[index]
    assert "gave up after 2 attempts" in failed.error["message"]  # type: ignore[index]
    events = await store.events(record.id)
    assert [e["event"] for e in events] == ["submitted", "started", "retry", "started", "failed"]
    assert events[2]["detail"]["reason"] == "timeout"
    assert (runner.state()["retried"], runner.state()["failed"]) == (1, 1)


@asyncio_test
async def test_each_kind_has_its_own_timeout(store: JobStore, pool: SharedPool, tmp_path: Path) -> None:
    strict, patient = Gate(tmp_path, "strict"), Gate(tmp_path, "patient")
    kinds = policies(strict_gate=KindPolicy(timeout=0.3), patient_gate=KindPolicy(timeout=WAIT))
    async with running(store, pool, policies=kinds):
        slow, _ = await store.submit("patient_gate", b"patient", gate_params(patient))
        quick, _ = await store.submit("strict_gate", b"strict", gate_params(strict))
        await patient.wait_started()
        await strict.wait_started()
        assert (await settled(store, quick.id)).error["code"] == "timeout"  # type: ignore[index]
        still = await store.get(slow.id)
        assert still is not None and still.status == "running"  # well past 0.3 s, under its own timeout
        await patient.open()
        done = await settled(store, slow.id)
    assert (done.status, done.result) == ("succeeded", "patient")


# ---------------------------------------------------------------------- cancellation


@asyncio_test
async def test_a_cancelled_queued_job_never_runs(
    store: JobStore, pool: SharedPool, gate: Gate, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    async with running(store, pool, concurrency=1) as runner:
        blocker, _ = await store.submit("gate", b"", gate_params(gate))
        await gate.wait_started()
        victim, _ = await store.submit("touch", b"", {"path": str(marker)})
        cancelled = await runner.cancel(victim.id)
        assert cancelled.status == "cancelled" and cancelled.finished_at is not None
        assert cancelled.as_json()["error"] == {"code": "cancelled", "message": "the job was cancelled"}
        later, _ = await store.submit("echo", b"later", {})
        await gate.open()
        assert (await settled(store, later.id)).status == "succeeded"  # claimed after the victim would have been
        assert (await settled(store, blocker.id)).status == "succeeded"
    assert not marker.exists()
    assert await store.get(victim.id) == cancelled
    assert await store.events(victim.id) == [
        {"at": victim.created_at, "event": "submitted", "detail": None},
        {"at": cancelled.finished_at, "event": "cancelled", "detail": {"was": "queued"}},
    ]
    with pytest.raises(JobFinished, match="already cancelled") as caught:
        await store.cancel(victim.id)
    assert caught.value.record == cancelled
    with pytest.raises(JobFinished, match="already succeeded"):
        await runner.cancel(later.id)
    with pytest.raises(JobNotFound):
        await runner.cancel("0" * 32)
    with pytest.raises(JobNotFound):
        await store.events("0" * 32)
    with pytest.raises(JobNotFound):
        await store.payload("0" * 32)
    assert await store.get("0" * 32) is None


@asyncio_test
async def test_cancelling_a_running_job_kills_its_pool_worker(
    store: JobStore, pool: SharedPool, gate: Gate
) -> None:
    async with running(store, pool) as runner:
        record, _ = await store.submit("gate", b"", gate_params(gate))
        pid = await gate.wait_started()
        cancelled = await runner.cancel(record.id)
        assert cancelled.status == "cancelled"
        await process_gone(pid)
        await until(lambda: runner.state()["running"] == 0, "the runner to drop the cancelled attempt")
        after, _ = await store.submit("echo", b"next", {})
        assert (await settled(store, after.id)).status == "succeeded"
        # the store says succeeded as its commit ends; the runner counts it when its await resumes
        await until(lambda: runner.state()["completed"] == 1, "the runner to count the completion")
        state = runner.state()
    assert await store.get(record.id) == cancelled  # no outcome was recorded over the cancellation
    assert await event_names(store, record.id) == ["submitted", "started", "cancelled"]
    assert pool.stats().cancelled == 1
    assert (state["cancelled"], state["completed"], state["failed"]) == (1, 1, 0)


@asyncio_test
async def test_a_cancel_made_by_another_process_stops_the_attempt_at_the_next_poll(
    store: JobStore, pool: SharedPool, gate: Gate
) -> None:
    async with running(store, pool, poll_interval=0.05) as runner, JobStore(store.path) as elsewhere:
        record, _ = await store.submit("gate", b"", gate_params(gate))
        pid = await gate.wait_started()
        await elsewhere.cancel(record.id)  # another connection: this runner hears nothing at once
        await process_gone(pid)
        await until(lambda: runner.state()["cancelled"] == 1, "the runner to drop the attempt")
    assert await event_names(store, record.id) == ["submitted", "started", "cancelled"]
    assert (await settled(store, record.id)).status == "cancelled"


# ---------------------------------------------------------------------- submitting and listing


@asyncio_test
async def test_an_idempotency_key_makes_one_job_even_under_racing_submits(store: JobStore) -> None:
    first, created = await store.submit("echo", b"a", {"n": 1}, idempotency_key="order-1")
    again, created_again = await store.submit("echo", b"different", {"n": 2}, idempotency_key="order-1")
    other, created_other = await store.submit("echo", b"a", {"n": 1}, idempotency_key="order-2")
    assert (created, created_again, created_other) == (True, False, True)
    assert again == first and other.id != first.id
    assert await store.payload(first.id) == b"a"

    async with JobStore(store.path) as elsewhere:  # a second connection, as another process would have
        racing = await asyncio.gather(*(
            (store if i % 2 else elsewhere).submit("echo", f"{i}".encode(), {}, idempotency_key="order-3")
            for i in range(20)
        ))
    assert sum(created for _, created in racing) == 1
    assert len({record.id for record, _ in racing}) == 1
    winner = racing[0][0].id
    assert await store.events(winner) == [
        {"at": racing[0][0].created_at, "event": "submitted", "detail": {"idempotency_key": "order-3"}}
    ]
    everything, _ = await store.list(limit=500)
    assert len(everything) == 3


@asyncio_test
async def test_list_pages_newest_first_with_a_status_filter_and_cursors(store: JobStore) -> None:
    submitted = [(await store.submit("echo", f"{i}".encode(), {"i": i}))[0] for i in range(7)]
    for record in submitted[1:6:3]:
        await store.cancel(record.id)
    cancelled = {submitted[1].id, submitted[4].id}
    newest_first = sorted(submitted, key=lambda r: (r.created_at, r.id), reverse=True)

    everything, end = await store.list(limit=500)
    assert end is None
    assert [r.id for r in everything] == [r.id for r in newest_first]

    async def pages(status: str | None, limit: int) -> list[list[str]]:
        seen, cursor = [], None
        while True:
            page, cursor = await store.list(status, limit=limit, cursor=cursor)
            seen.append([r.id for r in page])
            if cursor is None:
                return seen

    assert [len(p) for p in await pages(None, 3)] == [3, 3, 1]
    assert sum(await pages(None, 3), []) == [r.id for r in newest_first]
    assert sum(await pages(None, 7), []) == [r.id for r in newest_first]
    queued = sum(await pages("queued", 2), [])
    assert queued == [r.id for r in newest_first if r.id not in cancelled]
    assert {r.id for r in (await store.list("cancelled"))[0]} == cancelled
    assert (await store.list("running")) == ([], None)

    first_page, cursor = await store.list(limit=4)
    newer, _ = await store.submit("echo", b"newer", {})  # arrives while a client pages through
    rest, _ = await store.list(limit=500, cursor=cursor)
    assert [r.id for r in first_page + rest] == [r.id for r in newest_first]
    assert newer.id == (await store.list(limit=1))[0][0].id

    for status in ("done", "QUEUED", ""):
        with pytest.raises(ValueError, match="invalid status"):
            await store.list(status)
    for limit in (0, 501, -1, True, "3", 2.0):
        with pytest.raises(ValueError, match="invalid limit"):
            await store.list(limit=limit)  # type: ignore[arg-type]
    forged = base64.urlsafe_b64encode(b"[1, 2]").decode()
    for cursor in ("garbage", forged, base64.urlsafe_b64encode(b"{}").decode(), "é", 42):
        with pytest.raises(ValueError, match="invalid cursor"):
            await store.list(cursor=cursor)  # type: ignore[arg-type]


@asyncio_test
async def test_submit_refuses_what_it_could_not_store_or_read_back(store: JobStore) -> None:
    with pytest.raises(TypeError, match="payload must be bytes"):
        await store.submit("echo", "text", {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not JSON serializable"):
        await store.submit("echo", b"", {"when": datetime.now()})
    with pytest.raises(ValueError, match="kind"):
        await store.submit("", b"", {})
    assert await store.list() == ([], None)


@asyncio_test
async def test_a_locked_database_makes_submit_wait_without_blocking_the_loop(tmp_path: Path) -> None:
    async with JobStore(tmp_path / "jobs.db", busy_timeout=WAIT) as store:
        other = sqlite3.connect(store.path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            submitting = asyncio.ensure_future(store.submit("echo", b"", {}))
            ticks = 0
            for _ in range(10):  # the loop keeps turning while the submit waits in the store's thread
                await asyncio.sleep(0.01)
                ticks += 1
            assert ticks == 10 and not submitting.done()
            other.execute("COMMIT")
            record, created = await asyncio.wait_for(submitting, WAIT)
        finally:
            other.close()
        assert created and (await store.get(record.id)) == record


def test_policies_and_runners_refuse_nonsense(tmp_path: Path) -> None:
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="timeout"):
            KindPolicy(timeout=bad)
    with pytest.raises(ValueError, match="max_attempts"):
        KindPolicy(timeout=1, max_attempts=0)
    policy = KindPolicy(timeout=1, backoff_initial=1.0, backoff_max=5.0)
    assert [policy.backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    store = JobStore(tmp_path / "jobs.db")
    with pytest.raises(ValueError, match="concurrency"):
        JobRunner(store, on_pool(SharedPool(processes=1, cpus=1)), policies={}, concurrency=0)


# ---------------------------------------------------------------------- stopping, the lease, restarts


@asyncio_test
async def test_stop_lets_a_job_that_finishes_in_time_finish(store: JobStore, pool: SharedPool, gate: Gate) -> None:
    runner = JobRunner(store, on_pool(pool), policies=policies(), concurrency=1, poll_interval=HOUR)
    await runner.start()
    record, _ = await store.submit("gate", b"in time", gate_params(gate))
    await gate.wait_started()
    stopping = asyncio.ensure_future(runner.stop(timeout=WAIT))
    await until(lambda: runner.state()["state"] == "stopping", "the runner to begin stopping")
    late, _ = await store.submit("echo", b"", {})
    await gate.open()
    await asyncio.wait_for(stopping, WAIT)
    assert (await store.get(record.id)).status == "succeeded"  # type: ignore[union-attr]
    assert await event_names(store, record.id) == ["submitted", "started", "succeeded"]
    assert (await store.get(late.id)).status == "queued"  # type: ignore[union-attr]  # stopping claims nothing new
    state = runner.state()
    assert (state["state"], state["lease"], state["interrupted"]) == ("stopped", "released", 0)


@asyncio_test
async def test_stop_puts_an_unfinished_job_back_and_the_next_runner_finishes_it(
    store: JobStore, pool: SharedPool, gate: Gate
) -> None:
    first = JobRunner(store, on_pool(pool), policies=policies(), concurrency=1, poll_interval=HOUR)
    await first.start()
    record, _ = await store.submit("gate", b"resumed", gate_params(gate))
    pid = await gate.wait_started()
    await first.stop(timeout=0.2)
    back = await store.get(record.id)
    assert back is not None and (back.status, back.attempts, back.finished_at) == ("queued", 0, None)
    assert await event_names(store, record.id) == ["submitted", "started", "interrupted"]
    await process_gone(pid)  # the interrupted attempt's worker was killed, not left running
    assert first.state()["interrupted"] == 1

    async with running(store, pool):
        await gate.wait_started()
        await gate.open()
        done = await settled(store, record.id)
    assert (done.status, done.result, done.attempts) == ("succeeded", "resumed", 1)
    names = await event_names(store, record.id)
    assert names == ["submitted", "started", "interrupted", "started", "succeeded"]


@asyncio_test
async def test_a_second_runner_stands_by_until_the_lease_is_free(store: JobStore, pool: SharedPool) -> None:
    first = JobRunner(store, on_pool(pool), policies=policies(), concurrency=2, poll_interval=HOUR)
    await first.start()
    assert Path(f"{store.path}.runner.lock").exists()
    async with JobStore(store.path) as elsewhere:
        second = JobRunner(
            elsewhere, on_pool(pool), policies=policies(), concurrency=2, poll_interval=HOUR, lease_retry=0.05
        )
        await second.start()
        try:
            standby = second.state()
            assert (standby["state"], standby["lease"], standby["lease_holder"]) == ("standby", "standby", first.id)
            one, _ = await elsewhere.submit("echo", b"1", {})
            first.notify()  # submitted through another store object, as another process would: no automatic wake-up
            await settled(store, one.id)
            assert (await store.events(one.id))[1]["detail"]["runner"] == first.id
            assert second.state()["state"] == "standby"

            await first.stop()
            await until(lambda: second.state()["state"] == "running", "the standby runner to take over")
            assert second.state()["lease"] == "held"
            two, _ = await elsewhere.submit("echo", b"2", {})
            await settled(store, two.id)
            assert (await store.events(two.id))[1]["detail"]["runner"] == second.id
            assert second.state()["reclaimed"] == 0  # the first stopped cleanly: nothing to reclaim
        finally:
            await second.stop(timeout=0)


def start_child(db: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(db), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "CUTOVER_CPUS": "2"},
    )


async def read_until(child: subprocess.Popen[str], prefix: str, log: list[str]) -> str:
    assert child.stdout is not None
    while not (line := await in_daemon_thread(child.stdout.readline)).startswith(prefix):
        assert line, f"the runner process exited before printing {prefix!r}:\n{''.join(log)}"
        log.append(line)
    log.append(line)
    return line


async def finish(child: subprocess.Popen[str], log: list[str]) -> None:
    """Kill the child if it still runs, collect the rest of its output, reap it."""
    if child.poll() is None:
        child.kill()
    assert child.stdout is not None
    log.extend((await in_daemon_thread(child.stdout.read)).splitlines(keepends=True))
    await in_daemon_thread(child.wait)


@pytest.mark.subprocess
@asyncio_test
async def test_jobs_complete_exactly_once_across_a_kill_and_a_restart(tmp_path: Path) -> None:
    db, gate, log = tmp_path / "cutover.db", Gate(tmp_path), []
    async with JobStore(db) as store:
        jobs: list[JobRecord] = []
        for i in range(50):
            # Job 3 holds a worker at the gate: it is surely running when the kill lands.
            kind, params = ("gate", gate_params(gate)) if i == 3 else ("crunch", {})
            jobs.append((await store.submit(kind, f"job{i:02}".encode(), params))[0])
        gated = jobs[3]

        async def succeeded() -> int:
            return len((await store.list("succeeded", limit=500))[0])

        killed = start_child(db)
        try:
            await read_until(killed, "ready", log)
            worker = await gate.wait_started()
            await eventually(lambda: _at_least(succeeded, 10), "the first runner to finish 10 jobs")
        finally:
            killed.send_signal(signal.SIGKILL)
            await finish(killed, log)
        await process_gone(worker)  # the killed runner's pool workers died with it
        done_before_restart = await succeeded()
        assert 10 <= done_before_restart < 50, "the kill came after the last job: the restart was not exercised"
        assert (await store.get(gated.id)).status == "running"  # type: ignore[union-attr]  # left by a dead runner

        restarted = start_child(db)
        try:
            ready = json.loads((await read_until(restarted, "ready", log)).removeprefix("ready"))
            await gate.wait_started()
            await gate.open()
            await eventually(lambda: _at_least(succeeded, 50), "the restarted runner to finish every job")
            restarted.send_signal(signal.SIGTERM)
            stopped = json.loads((await read_until(restarted, "stopped", log)).removeprefix("stopped"))
            assert await in_daemon_thread(restarted.wait) == 0
        finally:
            await finish(restarted, log)

        reclaimed = []
        for i, job in enumerate(jobs):
            record = await store.get(job.id)
            assert record is not None and record.status == "succeeded", (record, "".join(log))
            assert (record.result if i == 3 else record.result["payload"]) == f"job{i:02}"
            names = Counter(await event_names(store, job.id))
            assert names["succeeded"] == 1, (job.id, names)
            assert names["failed"] == names["cancelled"] == 0
            assert names["started"] == 1 + names["reclaimed"]
            if names["reclaimed"]:
                reclaimed.append(job.id)
    assert gated.id in reclaimed
    assert ready["reclaimed"] == len(reclaimed) and ready["lease"] == "held"
    assert stopped["completed"] == 50 - done_before_restart
    assert stopped["state"] == "stopped" and stopped["interrupted"] == 0
    assert sum(line.startswith("done ") for line in log) >= 50  # every job ran; a few, cut short, ran twice


@pytest.mark.subprocess
@asyncio_test
async def test_a_job_whose_runner_died_on_its_last_attempt_fails_instead_of_looping(tmp_path: Path) -> None:
    db, gate, log = tmp_path / "cutover.db", Gate(tmp_path), []
    async with JobStore(db) as store:
        record, _ = await store.submit("gate", b"poison", gate_params(gate))
        for run in ("killed", "restarted"):
            child = start_child(db, "1")  # the gate kind gets a single attempt
            try:
                ready = json.loads((await read_until(child, "ready", log)).removeprefix("ready"))
                if run == "killed":
                    worker = await gate.wait_started()  # say it is the job that takes its runner down
                    await eventually(lambda: _executing(store, record.id), "the runner to record the call's start")
            finally:
                await finish(child, log)
        await process_gone(worker)
        failed = await store.get(record.id)
        assert failed is not None and failed.status == "failed", "".join(log)
        assert failed.error == {
            "code": "worker_crashed", "message": "the runner died while running this job, after 1 attempt"
        }
        events = await store.events(record.id)
    assert [e["event"] for e in events] == ["submitted", "started", "failed"]
    assert events[2]["detail"]["previous_runner"] == events[1]["detail"]["runner"] != ready["runner"]
    assert (ready["failed"], ready["reclaimed"]) == (1, 0)


async def _executing(store: JobStore, job_id: str) -> bool:
    record = await store.get(job_id)
    return record is not None and record.attempt_started is True


async def _at_least(count: Callable[[], Awaitable[int]], n: int) -> bool:
    return await count() >= n


@pytest.mark.subprocess
@asyncio_test
async def test_a_crash_loop_charges_the_job_that_was_executing_and_never_the_ones_queued_behind_it(
    tmp_path: Path,
) -> None:
    """One pool worker, three jobs claimed: the gate job executes, two bystanders wait in the pool's queue.

    The runner is SIGKILLed three times. The gate job was executing each time: it is charged, and fails
    after its three attempts. The bystanders never reached a worker: each death refunds their attempt,
    and they succeed after the last restart, on their first charged attempt.
    """
    db, gate, log = tmp_path / "cutover.db", Gate(tmp_path), []
    kills = 3
    async with JobStore(db) as store:
        poison, _ = await store.submit("gate", b"poison", gate_params(gate))
        bystanders = [(await store.submit("crunch", f"bystander {i}".encode(), {}))[0] for i in range(2)]

        async def all_claimed() -> bool:
            records = [await store.get(job.id) for job in (poison, *bystanders)]
            return all(r is not None and r.status == "running" for r in records)

        async def executing() -> bool:
            record = await store.get(poison.id)
            return record is not None and record.attempt_started is True

        for _ in range(kills):
            child = start_child(db, "3", "1", "3")  # gate: 3 attempts; 1 pool worker; 3 jobs claimed at once
            try:
                await read_until(child, "ready", log)
                worker = await gate.wait_started()  # the poison job executes on the only worker
                await eventually(all_claimed, "the runner to claim the bystanders too")
                await eventually(executing, "the runner to record that the poison job's call started")
            finally:
                child.send_signal(signal.SIGKILL)
                await finish(child, log)
            await process_gone(worker)

        last = start_child(db, "3", "1", "3")
        try:
            ready = json.loads((await read_until(last, "ready", log)).removeprefix("ready"))
            try:
                for job in bystanders:
                    await settled(store, job.id)
            except AssertionError as exc:
                raise AssertionError([(e["event"], e["detail"]) for job in (poison, *bystanders)
                                      for e in await store.events(job.id)]) from exc
        finally:
            await finish(last, log)

        failed = await store.get(poison.id)
        assert failed is not None and failed.status == "failed", "".join(log)
        assert failed.error == {"code": "worker_crashed",
                                "message": f"the runner died while running this job, after {kills} attempts"}
        poison_events = await store.events(poison.id)
        assert [e["detail"]["charged"] for e in poison_events if e["event"] == "reclaimed"] == [True] * (kills - 1)
        charged_bystanders = 0
        for job in bystanders:
            record = await store.get(job.id)
            assert record is not None and record.status == "succeeded", (record, "".join(log))
            assert record.attempts == 1
            events = await store.events(job.id)
            reclaimed = [e["detail"] for e in events if e["event"] == "reclaimed"]
            assert [(d["started"], d["charged"]) for d in reclaimed] == [(False, False)] * kills
            assert [e["event"] for e in events].count("started") == kills + 1
            assert events[-1]["event"] == "succeeded" and events[-1]["detail"]["started"] is True
            charged_bystanders += any(d["charged"] for d in reclaimed)
    assert (ready["failed"], ready["reclaimed"]) == (1, len(bystanders))
    record_row("faults", f"crash loop: the runner SIGKILLed {kills} times while one job executes and "
               f"{len(bystanders)} wait in the pool queue", tried=len(bystanders),
               survived=len(bystanders) - charged_bystanders,
               detail=f"bystander jobs never charged (attempts 1, succeeded once); the executing job failed "
                      f"`worker_crashed` after {kills} attempts")


@asyncio_test
async def test_a_database_from_before_attempt_started_is_migrated_and_its_running_jobs_charged(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    old_schema = bridge_jobstore._SCHEMA.replace(
        ",\n    attempt_started INTEGER          -- 1 once the current attempt's call began on a worker, 0 before; NULL: unknown", ""
    )
    assert "attempt_started" not in old_schema
    with sqlite3.connect(db) as conn:
        conn.executescript(old_schema)
        conn.execute(
            "INSERT INTO jobs (id, kind, status, attempts, created_at, run_after, runner, params, payload)"
            " VALUES ('old', 'echo', 'running', 1, '2026-01-01T00:00:00.000+00:00', 0, 'dead:1', '{}', x'6869')"
        )
        conn.execute("INSERT INTO job_events (job_id, at, event) VALUES ('old', '2026-01-01T00:00:00.000+00:00', 'submitted')")
    async with JobStore(db) as store, JobStore(db) as again:  # two openers: the column is added once
        pool = SharedPool(processes=1, cpus=1)
        async with pool, running(store, pool, concurrency=1) as runner:
            done = await settled(store, "old")
            assert done.status == "succeeded" and done.attempts == 2  # the dead attempt of unknown start was charged
            assert runner.state()["reclaimed"] == 1
        reclaimed = [e for e in await again.events("old") if e["event"] == "reclaimed"]
        assert [(e["detail"]["started"], e["detail"]["charged"]) for e in reclaimed] == [(None, True)]
    with sqlite3.connect(db) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]
    assert columns.count("attempt_started") == 1
