"""Durable jobs on an embedded SQLite file: the records, their states, and the store.

What FastAPI's ``BackgroundTasks`` lacks: it runs a coroutine after the
response and forgets it, with no id to poll, no retry, no timeout, and a
restart loses it. Here a job is a row in a SQLite file (``var/cutover.db`` in
the apps), submitted through :class:`JobStore` and run by one
:class:`~bridge.jobs.JobRunner` per database on the shared pool. The record a
client polls has exactly the legacy service's JSON shape.

Never blocking the event loop: every statement goes through aiosqlite, a
well-kept library that runs each connection in a thread of its own and hands
results back as asyncio futures. The store opens two connections, so two
threads: a writer, whose transactions (:class:`~bridge.sqlitewriter.SqliteWriter`) run one at a time
and begin ``IMMEDIATE`` (the database write lock is taken up front, so
processes that share the file wait their turn instead of failing a lock
upgrade), and a reader, which in WAL mode sees the last committed state
without waiting for the writer.

A job's states, each change one transaction that also appends its row to
``job_events`` (the audit trail that proves "completed exactly once")::

    submit --> queued --claim--> running --> succeeded
                ^ ^ ^              |  \\---> failed      invalid input, internal error,
                | | |              |                     or retries exhausted
                | | +-- retry -----+      worker crashed / timed out: run_after = now + backoff
                | +---- interrupted -+    the runner stopped first: the attempt is refunded
                +------ reclaimed ---+    its runner died: found by the next lease holder
    queued, running --cancel--> cancelled

``started`` is the claim; the attempt's call then starts on a pool worker, or
not yet (it may wait in the pool's queue). The ``attempt_started`` column says
which, for the current attempt (0 from the claim, 1 once the runner hears the
call began, NULL for a row from before the column existed), and every event
that ends an attempt (``succeeded``, ``failed``, ``retry``, ``interrupted``,
``reclaimed``) copies it into its detail as ``"started"``. A dead runner's
job whose call had not started is queued again with its attempt refunded:
only a job that was executing when its process died can have killed it.

``succeeded``, ``failed`` and ``cancelled`` are final. Every runner-side
transition is guarded by the claim (``status = 'running'``, the same runner,
the same attempt), so whichever final word reaches the database first wins and
the others change nothing: a job cancelled while its result was on the way
stays cancelled, and a completion is recorded at most once. Execution itself
is at least once: a runner killed after the pool returned but before the
commit runs the job again after the restart.

WAL needs every process that opens the file on one host, on a local file
system (not NFS).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from .errors import JobFinished, JobNotFound
from .jobrecord import (
    FINAL_STATUSES,
    RECORD_COLUMNS,
    JobRecord,
    SubmitListeners,
    attempts_text,
    decode_cursor,
    dumps_json,
    encode_cursor,
    iso_time,
    list_filters,
    reclaim_decision,
    started_flag,
    validate_submit,
)
from .schema import Step, migrate_sqlite, statements
from .sqlitewriter import SqliteWriter

__all__ = ["DEFAULT_DB_PATH", "JobStore"]

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_DB_PATH = Path("var/cutover.db")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    run_after       REAL NOT NULL,   -- unix time before which the job is not claimed (retry backoff)
    runner          TEXT,            -- the runner holding the claim while running, or that ran it last
    params          TEXT NOT NULL,   -- JSON object
    payload         BLOB NOT NULL,
    result          TEXT,            -- JSON value, once succeeded
    error           TEXT,            -- JSON {"code", "message"}, once failed or cancelled
    idempotency_key TEXT UNIQUE,
    attempt_started INTEGER          -- 1 once the current attempt's call began on a worker, 0 before; NULL: unknown
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_by_age ON jobs (created_at, id);
CREATE TABLE IF NOT EXISTS job_events (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs (id),
    at     TEXT NOT NULL,
    event  TEXT NOT NULL,
    detail TEXT                      -- JSON object or NULL
);
CREATE INDEX IF NOT EXISTS job_events_by_job ON job_events (job_id, seq);
"""
#: Columns that files made before the schema was versioned may lack, with their definitions.
_UNVERSIONED_GAPS = {"attempt_started": "INTEGER"}
_COLUMNS = RECORD_COLUMNS


class JobStore:
    """Jobs in one SQLite file, safe to share between the processes of one host.

    Open it with ``async with JobStore(path) as store:`` or :meth:`open` /
    :meth:`close`, and close it: aiosqlite's threads are not daemons, so an
    open store keeps the interpreter from exiting. Callbacks given as ``on_submit`` or through
    :meth:`subscribe` are called, on the loop, with each newly created job once
    it is committed: that is how a runner in this process hears of work at
    once. Runners in other processes see it at their next poll.
    """

    engine = "sqlite"
    #: A local file is always there; the PostgreSQL store says False while its database is away.
    reachable = True

    def __init__(
        self,
        path: str | Path,
        *,
        on_submit: Callable[[JobRecord], object] | None = None,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._listeners = SubmitListeners(on_submit)
        self._writer: SqliteWriter | None = None
        self._reader: aiosqlite.Connection | None = None

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Create the file (and its folder) and schema if missing, and switch it to WAL."""
        if self._writer is not None:
            raise RuntimeError(f"the job store {self.path} is already open")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = await self._connect()
        try:
            await writer.execute_fetchall("PRAGMA journal_mode = WAL")
            await migrate_sqlite(writer, "jobs", _STEPS, str(self.path))
            reader = await self._connect()
        except BaseException:
            await writer.close()
            raise
        await reader.execute_fetchall("PRAGMA query_only = ON")
        self._writer, self._reader = SqliteWriter(writer, where=str(self.path)), reader

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: we write BEGIN and COMMIT ourselves, so sqlite3 never opens a transaction behind our back.
        db = await aiosqlite.connect(self.path, isolation_level=None, timeout=self.busy_timeout)
        db.row_factory = sqlite3.Row
        # FULL: a submit that returned is on disk, not just in the OS cache, when the machine loses power.
        await db.execute_fetchall("PRAGMA synchronous = FULL")
        await db.execute_fetchall("PRAGMA foreign_keys = ON")
        return db

    async def close(self) -> None:
        """Let the transaction in progress commit, then close both connections. Safe to call twice."""
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        if writer is not None:
            await writer.close()
        if reader is not None:
            await reader.close()

    async def __aenter__(self) -> JobStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def subscribe(self, callback: Callable[[JobRecord], object]) -> Callable[[], None]:
        """Call ``callback(record)`` after each new job commits; returns the unsubscribe function."""
        return self._listeners.subscribe(callback)

    # ------------------------------------------------------------------ the client's side

    async def submit(
        self, kind: str, payload: bytes, params: dict[str, Any], *, idempotency_key: str | None = None,
        hold: bool = False,
    ) -> tuple[JobRecord, bool]:
        """Queue a job; returns ``(record, created)``.

        ``hold=True`` records the job as queued but never due, so no runner
        claims it: a shadow copy that is only validated (:mod:`bridge.shadowing`)
        gets the answer a real submit gets, and costs no work.

        With an ``idempotency_key`` already used, nothing is queued and the
        existing job comes back with ``created=False``, whatever its kind or
        status: a client retrying a request it never saw answered gets the job
        it made. The key is a UNIQUE column, so racing submits, from any
        process, still make one job.
        """
        params_json = validate_submit(kind, payload, params)  # before anything is written
        job_id, now = uuid.uuid4().hex, time.time()
        run_after = math.inf if hold else now

        async def insert(db: aiosqlite.Connection) -> tuple[sqlite3.Row, bool]:
            created = await db.execute_fetchall(
                f"INSERT INTO jobs (id, kind, status, created_at, run_after, params, payload, idempotency_key)"
                f" VALUES (?, ?, 'queued', ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING"
                f" RETURNING {_COLUMNS}",
                (job_id, kind, iso_time(now), run_after, params_json, bytes(payload), idempotency_key),
            )
            if created:
                detail = {"idempotency_key": idempotency_key} if idempotency_key is not None else None
                await _event(db, job_id, now, "submitted", detail)
                return created[0], True
            existing = await db.execute_fetchall(
                f"SELECT {_COLUMNS} FROM jobs WHERE idempotency_key = ?", (idempotency_key,)
            )
            return existing[0], False

        row, created = await self._transaction(insert)
        record = JobRecord.from_row(row)
        if created:
            self._listeners.tell(record)
        return record, created

    async def get(self, job_id: str) -> JobRecord | None:
        rows = await self._read(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return JobRecord.from_row(rows[0]) if rows else None

    async def payload(self, job_id: str) -> bytes:
        rows = await self._read("SELECT payload FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise JobNotFound(f"no job {job_id!r}")
        return bytes(rows[0]["payload"])

    async def list(
        self, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        """A page of jobs, newest first (``created_at``, then ``id``), and the cursor of the next page or None.

        Pages follow a keyset, not an offset: jobs submitted while a client
        pages through never shift or repeat what it sees.
        """
        list_filters(status, limit)
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if cursor is not None:
            where.append("(created_at, id) < (?, ?)")
            args.extend(decode_cursor(cursor))
        sql = f"SELECT {_COLUMNS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self._read(sql + " ORDER BY created_at DESC, id DESC LIMIT ?", (*args, limit + 1))
        records = [JobRecord.from_row(row) for row in rows[:limit]]
        return records, (encode_cursor(records[-1]) if len(rows) > limit else None)

    async def cancel(self, job_id: str) -> JobRecord:
        """Mark a queued or running job cancelled; returns the cancelled record.

        This only records the decision. A runner in this process stops the
        running attempt when cancelled through :meth:`JobRunner.cancel
        <bridge.jobs.JobRunner.cancel>`; a runner elsewhere notices at its next poll. Either way the attempt's
        outcome is then discarded. Raises :class:`JobNotFound` or
        :class:`JobFinished`.
        """
        now = time.time()
        error = {"code": "cancelled", "message": "the job was cancelled"}

        async def cancel(db: aiosqlite.Connection) -> sqlite3.Row:
            rows = await db.execute_fetchall(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
            if not rows:
                raise JobNotFound(f"no job {job_id!r}")
            if rows[0]["status"] in FINAL_STATUSES:
                raise JobFinished(JobRecord.from_row(rows[0]))
            [row] = await db.execute_fetchall(
                f"UPDATE jobs SET status = 'cancelled', finished_at = ?, error = ? WHERE id = ? RETURNING {_COLUMNS}",
                (iso_time(now), dumps_json(error), job_id),
            )
            await _event(db, job_id, now, "cancelled", {"was": rows[0]["status"]})
            return row

        return JobRecord.from_row(await self._transaction(cancel))

    async def purge(self, created_before: float) -> int:
        """Delete every job created before ``created_before`` (unix time) that is not running, with its events.

        For stores whose jobs are disposable after a while (the shadow
        namespace); a real job store keeps its audit trail. Returns how many went.
        """
        cutoff = iso_time(created_before)

        async def purge(db: aiosqlite.Connection) -> int:
            rows = await db.execute_fetchall(
                "SELECT id FROM jobs WHERE created_at < ? AND status != 'running'", (cutoff,)
            )
            ids = [row["id"] for row in rows]
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ", ".join("?" * len(chunk))
                await db.execute_fetchall(f"DELETE FROM job_events WHERE job_id IN ({marks})", chunk)
                await db.execute_fetchall(f"DELETE FROM jobs WHERE id IN ({marks})", chunk)
            return len(ids)

        return await self._transaction(purge)

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        """The job's audit trail, oldest first: ``{"at", "event", "detail"}`` each. Raises :class:`JobNotFound`."""
        rows = await self._read("SELECT at, event, detail FROM job_events WHERE job_id = ? ORDER BY seq", (job_id,))
        if not rows:  # every job has its "submitted" event
            raise JobNotFound(f"no job {job_id!r}")
        return [
            {"at": r["at"], "event": r["event"], "detail": None if r["detail"] is None else json.loads(r["detail"])}
            for r in rows
        ]

    # ------------------------------------------------------------------ the runner's side
    #
    # What bridge.jobs.JobRunner calls, and every store provides (the
    # PostgreSQL one too). The settling ones are guarded by the claim: the job
    # must still be running, by this runner, in this attempt. A False return
    # means someone else had the final word.

    #: One runner per database, which takes the flock lease beside the file.
    shared_runners = False

    async def claim(self, runner: str) -> tuple[JobRecord | None, int, float | None]:
        """Take the oldest due queued job: ``(record or None, queued jobs left, earliest run_after left)``."""
        now = time.time()

        async def claim(db: aiosqlite.Connection) -> tuple[sqlite3.Row | None, int, float | None]:
            rows = await db.execute_fetchall(
                f"UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?, runner = ?,"
                f" attempt_started = 0"
                f" WHERE rowid = (SELECT rowid FROM jobs WHERE status = 'queued' AND run_after <= ?"
                f"                ORDER BY created_at, rowid LIMIT 1)"
                f" RETURNING {_COLUMNS}",
                (iso_time(now), runner, now),
            )
            if rows:
                await _event(db, rows[0]["id"], now, "started", {"attempt": rows[0]["attempts"], "runner": runner})
            [left] = await db.execute_fetchall(
                "SELECT COUNT(*) AS n, MIN(run_after) AS next FROM jobs WHERE status = 'queued'"
            )
            return (rows[0] if rows else None), left["n"], left["next"]

        row, queued, next_at = await self._transaction(claim)
        return (JobRecord.from_row(row) if row is not None else None), queued, next_at

    async def settle(
        self,
        claimed: JobRecord,
        runner: str,
        status: str,
        event: str,
        detail: dict[str, Any],
        *,
        result: str | None = None,
        error: dict[str, str] | None = None,
        run_after: float | None = None,
    ) -> bool:
        """Move a claimed job to ``status`` ('queued' means retry at ``run_after``); False if the claim was lost."""
        now = time.time()
        finished = iso_time(now) if status in FINAL_STATUSES else None

        async def settle(db: aiosqlite.Connection) -> bool:
            rows = await db.execute_fetchall(
                "UPDATE jobs SET status = ?, finished_at = ?, result = ?, error = ?, run_after = COALESCE(?, run_after)"
                " WHERE id = ? AND status = 'running' AND runner = ? AND attempts = ? RETURNING attempt_started",
                (status, finished, result, None if error is None else dumps_json(error), run_after,
                 claimed.id, runner, claimed.attempts),
            )
            if rows:
                await _event(db, claimed.id, now, event, {**detail, "started": started_flag(rows[0])})
            return bool(rows)

        return await self._transaction(settle)

    async def mark_started(self, claimed: JobRecord, runner: str) -> bool:
        """The claimed attempt's call began on a worker; False if the claim was lost meanwhile."""

        async def mark(db: aiosqlite.Connection) -> bool:
            rows = await db.execute_fetchall(
                "UPDATE jobs SET attempt_started = 1"
                " WHERE id = ? AND status = 'running' AND runner = ? AND attempts = ? RETURNING id",
                (claimed.id, runner, claimed.attempts),
            )
            return bool(rows)

        return await self._transaction(mark)

    async def interrupt(self, runner: str) -> list[str]:
        """Put back every job this runner still has running, refunding the attempt; returns their ids."""
        now = time.time()

        async def interrupt(db: aiosqlite.Connection) -> list[str]:
            rows = await db.execute_fetchall(
                "UPDATE jobs SET status = 'queued', attempts = attempts - 1, run_after = ?"
                " WHERE status = 'running' AND runner = ? RETURNING id, attempts, attempt_started",
                (now, runner),
            )
            for row in rows:
                detail = {"attempt": row["attempts"] + 1, "runner": runner, "started": started_flag(row)}
                await _event(db, row["id"], now, "interrupted", detail)
            return [row["id"] for row in rows]

        return await self._transaction(interrupt)

    async def reclaim(self, runner: str, max_attempts: Mapping[str, int]) -> tuple[list[str], list[str]]:
        """After taking the lease: every running job is a dead runner's. Returns (requeued ids, failed ids).

        A job whose call had started on a worker is charged the dead attempt:
        one that kills its whole runner (out of memory, say) must not be
        retried forever, so at its kind's ``max_attempts`` it fails with
        ``worker_crashed``. A job whose call had not started (it waited in the
        pool's queue, behind the one that was running) could not have killed
        anything: it is queued again with the attempt refunded, however often
        its runner dies. A row from before ``attempt_started`` existed is charged.
        """
        now = time.time()

        async def reclaim(db: aiosqlite.Connection) -> tuple[list[str], list[str]]:
            requeued, failed = [], []
            for row in await db.execute_fetchall(
                "SELECT id, kind, attempts, runner, attempt_started FROM jobs WHERE status = 'running'"
            ):
                decision = reclaim_decision(row, max_attempts.get(row["kind"]))
                detail = {"attempt": row["attempts"], "previous_runner": row["runner"], "runner": runner,
                          "started": started_flag(row)}
                if decision == "requeue":
                    await db.execute_fetchall(
                        "UPDATE jobs SET status = 'queued', attempts = attempts - 1, run_after = ? WHERE id = ?",
                        (now, row["id"]),
                    )
                    await _event(db, row["id"], now, "reclaimed", {**detail, "charged": False})
                    requeued.append(row["id"])
                elif decision == "fail":
                    error = {
                        "code": "worker_crashed",
                        "message": f"the runner died while running this job, after {attempts_text(row['attempts'])}",
                    }
                    await db.execute_fetchall(
                        "UPDATE jobs SET status = 'failed', finished_at = ?, error = ? WHERE id = ?",
                        (iso_time(now), dumps_json(error), row["id"]),
                    )
                    await _event(db, row["id"], now, "failed", {**detail, "code": "worker_crashed"})
                    failed.append(row["id"])
                else:
                    await db.execute_fetchall(
                        "UPDATE jobs SET status = 'queued', run_after = ? WHERE id = ?", (now, row["id"])
                    )
                    await _event(db, row["id"], now, "reclaimed", {**detail, "charged": True})
                    requeued.append(row["id"])
            return requeued, failed

        return await self._transaction(reclaim)

    async def claims(self, job_ids: list[str]) -> dict[str, tuple[str, str | None, int]]:
        """``{id: (status, runner, attempts)}``: lets a runner notice cancellations made by other processes."""
        marks = ", ".join("?" * len(job_ids))
        rows = await self._read(f"SELECT id, status, runner, attempts FROM jobs WHERE id IN ({marks})", job_ids)
        return {r["id"]: (r["status"], r["runner"], r["attempts"]) for r in rows}

    # ------------------------------------------------------------------ plumbing

    async def _read(self, sql: str, args: tuple[Any, ...] | list[Any]) -> list[sqlite3.Row]:
        if self._reader is None:
            raise RuntimeError(f"the job store {self.path} is not open: use `async with JobStore(path):`")
        return list(await self._reader.execute_fetchall(sql, args))

    async def _transaction(self, body: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``body`` as one transaction, all or nothing, even for a caller cancelled half-way
        (a job cancelled, a runner stopping): see :class:`~bridge.sqlitewriter.SqliteWriter`."""
        if self._writer is None:
            raise RuntimeError(f"the job store {self.path} is not open: use `async with JobStore(path):`")
        return await self._writer.transact(body)


async def _first_version(db: aiosqlite.Connection) -> None:
    """Version 1: the tables, and the columns a file from before versioning lacks."""
    for statement in statements(_SCHEMA):
        await db.execute(statement)
    have = {row["name"] for row in await db.execute_fetchall("PRAGMA table_info(jobs)")}
    for column, definition in _UNVERSIONED_GAPS.items():
        if column not in have:
            await db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {definition}")
            log.info("job store: added column jobs.%s", column)


#: The SQLite job schema's steps (:mod:`bridge.schema`): append, never edit.
_STEPS: tuple[Step, ...] = (_first_version,)


async def _event(db: aiosqlite.Connection, job_id: str, at: float, event: str, detail: dict[str, Any] | None) -> None:
    await db.execute_fetchall(
        "INSERT INTO job_events (job_id, at, event, detail) VALUES (?, ?, ?, ?)",
        (job_id, iso_time(at), event, None if detail is None else dumps_json(detail)),
    )
