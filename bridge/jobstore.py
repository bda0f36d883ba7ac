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
threads: a writer, whose transactions are serialised by an ``asyncio.Lock``
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

import asyncio
import base64
import binascii
import json
import logging
import math
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

__all__ = ["DEFAULT_DB_PATH", "STATUSES", "JobFinished", "JobNotFound", "JobRecord", "JobStore"]

T = TypeVar("T")
log = logging.getLogger("cutover.jobs")

DEFAULT_DB_PATH = Path("var/cutover.db")
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
MAX_LIST_LIMIT = 500

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
#: Columns added since the first schema, with their definitions: added to older files on open.
_MIGRATIONS = {"attempt_started": "INTEGER"}
_COLUMNS = ("id, kind, status, attempts, created_at, started_at, finished_at, params, result, error, idempotency_key,"
            " attempt_started")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


def _dumps(value: Any) -> str:
    """Strict JSON (no NaN): what goes in is what any client can read back."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


class JobNotFound(LookupError):
    """No job has this id."""


class JobFinished(Exception):
    """The job already reached a final status, so it cannot be cancelled; ``record`` is how it ended."""

    def __init__(self, record: JobRecord) -> None:
        super().__init__(f"job {record.id} already {record.status}")
        self.record = record


@dataclass(frozen=True)
class JobRecord:
    """One job as stored, without its payload (load that with :meth:`JobStore.payload`).

    ``started_at`` is the start of the latest attempt (its claim); ``attempts``
    counts the attempts charged against the kind's ``max_attempts`` (one
    interrupted by :meth:`JobRunner.stop <bridge.jobs.JobRunner.stop>`, or
    whose runner died before its call reached a worker, is refunded).
    ``attempt_started`` says whether the latest attempt's call began on a
    worker (None: unknown, a row older than that record); it is not part of
    the job's JSON.
    """

    id: str
    kind: str
    status: str
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    params: dict[str, Any]
    result: Any
    error: dict[str, str] | None
    idempotency_key: str | None
    attempt_started: bool | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    def as_json(self) -> dict[str, Any]:
        """The job as JSON for an HTTP answer: id, kind, status, attempts, times, then result or error."""
        body: dict[str, Any] = {
            "job_id": self.id,
            "kind": self.kind,
            "status": self.status,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }
        if self.status == "succeeded":
            body["result"] = self.result
        if self.error is not None:
            body["error"] = self.error
        return body

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> JobRecord:
        return cls(
            id=row["id"],
            kind=row["kind"],
            status=row["status"],
            attempts=row["attempts"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            params=json.loads(row["params"]),
            result=None if row["result"] is None else json.loads(row["result"]),
            error=None if row["error"] is None else json.loads(row["error"]),
            idempotency_key=row["idempotency_key"],
            attempt_started=_started(row),
        )


def _encode_cursor(record: JobRecord) -> str:
    raw = json.dumps([record.created_at, record.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    if not isinstance(cursor, str):
        raise ValueError(f"invalid cursor {cursor!r}: pass back the next_cursor of a previous page")
    try:
        created_at, job_id = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        if not (isinstance(created_at, str) and isinstance(job_id, str)):
            raise ValueError("wrong types")
        datetime.fromisoformat(created_at)
    except (ValueError, TypeError, UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError(f"invalid cursor {cursor!r}: pass back the next_cursor of a previous page") from exc
    return created_at, job_id


class JobStore:
    """Jobs in one SQLite file, safe to share between the processes of one host.

    Open it with ``async with JobStore(path) as store:`` or :meth:`open` /
    :meth:`close`, and close it: aiosqlite's threads are not daemons, so an
    open store keeps the interpreter from exiting. Callbacks given as ``on_submit`` or through
    :meth:`subscribe` are called, on the loop, with each newly created job once
    it is committed: that is how a runner in this process hears of work at
    once. Runners in other processes see it at their next poll.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        on_submit: Callable[[JobRecord], object] | None = None,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._listeners: list[Callable[[JobRecord], object]] = [on_submit] if on_submit else []
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Create the file (and its folder) and schema if missing, and switch it to WAL."""
        if self._writer is not None:
            raise RuntimeError(f"the job store {self.path} is already open")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = await self._connect()
        try:
            await writer.execute_fetchall("PRAGMA journal_mode = WAL")
            await writer.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nCOMMIT;")
            await _migrate(writer)
            reader = await self._connect()
        except BaseException:
            await writer.close()
            raise
        await reader.execute_fetchall("PRAGMA query_only = ON")
        self._writer, self._reader = writer, reader

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
        async with self._write_lock:
            writer, reader = self._writer, self._reader
            self._writer = self._reader = None
        for db in (writer, reader):
            if db is not None:
                await db.close()

    async def __aenter__(self) -> JobStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def subscribe(self, callback: Callable[[JobRecord], object]) -> Callable[[], None]:
        """Call ``callback(record)`` after each new job commits; returns the unsubscribe function."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

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
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty string, got {kind!r}")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        if not isinstance(params, dict):
            raise TypeError(f"params must be a dict, got {type(params).__name__}")
        params_json = _dumps(params)  # TypeError / ValueError before anything is written
        job_id, now = uuid.uuid4().hex, time.time()
        run_after = math.inf if hold else now

        async def insert(db: aiosqlite.Connection) -> tuple[sqlite3.Row, bool]:
            created = await db.execute_fetchall(
                f"INSERT INTO jobs (id, kind, status, created_at, run_after, params, payload, idempotency_key)"
                f" VALUES (?, ?, 'queued', ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING"
                f" RETURNING {_COLUMNS}",
                (job_id, kind, _iso(now), run_after, params_json, bytes(payload), idempotency_key),
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
        record = JobRecord._from_row(row)
        if created:
            for listener in list(self._listeners):
                try:
                    listener(record)
                except Exception:  # the job is committed: a listener's bug must not fail the submit
                    log.exception("an on_submit listener failed for job %s", record.id)
        return record, created

    async def get(self, job_id: str) -> JobRecord | None:
        rows = await self._read(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return JobRecord._from_row(rows[0]) if rows else None

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
        if status is not None and status not in STATUSES:
            raise ValueError(f"invalid status {status!r}: use one of {', '.join(STATUSES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"invalid limit {limit!r}: use an integer from 1 to {MAX_LIST_LIMIT}")
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if cursor is not None:
            where.append("(created_at, id) < (?, ?)")
            args.extend(_decode_cursor(cursor))
        sql = f"SELECT {_COLUMNS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self._read(sql + " ORDER BY created_at DESC, id DESC LIMIT ?", (*args, limit + 1))
        records = [JobRecord._from_row(row) for row in rows[:limit]]
        return records, (_encode_cursor(records[-1]) if len(rows) > limit else None)

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
                raise JobFinished(JobRecord._from_row(rows[0]))
            [row] = await db.execute_fetchall(
                f"UPDATE jobs SET status = 'cancelled', finished_at = ?, error = ? WHERE id = ? RETURNING {_COLUMNS}",
                (_iso(now), _dumps(error), job_id),
            )
            await _event(db, job_id, now, "cancelled", {"was": rows[0]["status"]})
            return row

        return JobRecord._from_row(await self._transaction(cancel))

    async def purge(self, created_before: float) -> int:
        """Delete every job created before ``created_before`` (unix time) that is not running, with its events.

        For stores whose jobs are disposable after a while (the shadow
        namespace); a real job store keeps its audit trail. Returns how many went.
        """
        cutoff = _iso(created_before)

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
    # For bridge.jobs.JobRunner only. The settling ones are guarded by the
    # claim: the job must still be running, by this runner, in this attempt.
    # A False return means someone else had the final word.

    async def _claim(self, runner: str) -> tuple[JobRecord | None, int, float | None]:
        """Take the oldest due queued job: ``(record or None, queued jobs left, earliest run_after left)``."""
        now = time.time()

        async def claim(db: aiosqlite.Connection) -> tuple[sqlite3.Row | None, int, float | None]:
            rows = await db.execute_fetchall(
                f"UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?, runner = ?,"
                f" attempt_started = 0"
                f" WHERE rowid = (SELECT rowid FROM jobs WHERE status = 'queued' AND run_after <= ?"
                f"                ORDER BY created_at, rowid LIMIT 1)"
                f" RETURNING {_COLUMNS}",
                (_iso(now), runner, now),
            )
            if rows:
                await _event(db, rows[0]["id"], now, "started", {"attempt": rows[0]["attempts"], "runner": runner})
            [left] = await db.execute_fetchall(
                "SELECT COUNT(*) AS n, MIN(run_after) AS next FROM jobs WHERE status = 'queued'"
            )
            return (rows[0] if rows else None), left["n"], left["next"]

        row, queued, next_at = await self._transaction(claim)
        return (JobRecord._from_row(row) if row is not None else None), queued, next_at

    async def _settle(
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
        finished = _iso(now) if status in FINAL_STATUSES else None

        async def settle(db: aiosqlite.Connection) -> bool:
            rows = await db.execute_fetchall(
                "UPDATE jobs SET status = ?, finished_at = ?, result = ?, error = ?, run_after = COALESCE(?, run_after)"
                " WHERE id = ? AND status = 'running' AND runner = ? AND attempts = ? RETURNING attempt_started",
                (status, finished, result, None if error is None else _dumps(error), run_after,
                 claimed.id, runner, claimed.attempts),
            )
            if rows:
                await _event(db, claimed.id, now, event, {**detail, "started": _started(rows[0])})
            return bool(rows)

        return await self._transaction(settle)

    async def _mark_started(self, claimed: JobRecord, runner: str) -> bool:
        """The claimed attempt's call began on a worker; False if the claim was lost meanwhile."""

        async def mark(db: aiosqlite.Connection) -> bool:
            rows = await db.execute_fetchall(
                "UPDATE jobs SET attempt_started = 1"
                " WHERE id = ? AND status = 'running' AND runner = ? AND attempts = ? RETURNING id",
                (claimed.id, runner, claimed.attempts),
            )
            return bool(rows)

        return await self._transaction(mark)

    async def _interrupt(self, runner: str) -> list[str]:
        """Put back every job this runner still has running, refunding the attempt; returns their ids."""
        now = time.time()

        async def interrupt(db: aiosqlite.Connection) -> list[str]:
            rows = await db.execute_fetchall(
                "UPDATE jobs SET status = 'queued', attempts = attempts - 1, run_after = ?"
                " WHERE status = 'running' AND runner = ? RETURNING id, attempts, attempt_started",
                (now, runner),
            )
            for row in rows:
                detail = {"attempt": row["attempts"] + 1, "runner": runner, "started": _started(row)}
                await _event(db, row["id"], now, "interrupted", detail)
            return [row["id"] for row in rows]

        return await self._transaction(interrupt)

    async def _reclaim(self, runner: str, max_attempts: Mapping[str, int]) -> tuple[list[str], list[str]]:
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
                started = _started(row)
                limit = max_attempts.get(row["kind"])
                detail = {"attempt": row["attempts"], "previous_runner": row["runner"], "runner": runner,
                          "started": started}
                if started is False:
                    await db.execute_fetchall(
                        "UPDATE jobs SET status = 'queued', attempts = attempts - 1, run_after = ? WHERE id = ?",
                        (now, row["id"]),
                    )
                    await _event(db, row["id"], now, "reclaimed", {**detail, "charged": False})
                    requeued.append(row["id"])
                elif limit is not None and row["attempts"] >= limit:
                    error = {
                        "code": "worker_crashed",
                        "message": f"the runner died while running this job, after {_attempts(row['attempts'])}",
                    }
                    await db.execute_fetchall(
                        "UPDATE jobs SET status = 'failed', finished_at = ?, error = ? WHERE id = ?",
                        (_iso(now), _dumps(error), row["id"]),
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

    async def _claims(self, job_ids: list[str]) -> dict[str, tuple[str, str | None, int]]:
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
        """Run ``body`` as one transaction, all or nothing.

        The transaction runs in a task of its own, shielded: a caller
        cancelled half-way (a job cancelled, a runner stopping) has its change
        committed or rolled back whole, never left open for the next caller's
        statements to land in.
        """
        db = self._writer
        if db is None:
            raise RuntimeError(f"the job store {self.path} is not open: use `async with JobStore(path):`")

        async def run() -> T:
            async with self._write_lock:
                await db.execute_fetchall("BEGIN IMMEDIATE")
                try:
                    result = await body(db)
                    await db.execute_fetchall("COMMIT")
                except BaseException:
                    try:
                        await db.execute_fetchall("ROLLBACK")
                    except sqlite3.Error:
                        pass  # a failed COMMIT may already have ended the transaction
                    raise
                return result

        task = asyncio.ensure_future(run())
        task.add_done_callback(_retrieve)  # a caller that went away leaves no "exception never retrieved"
        return await asyncio.shield(task)


def _started(row: sqlite3.Row) -> bool | None:
    """The row's ``attempt_started`` as a bool, None when unknown (a row older than the column)."""
    value = row["attempt_started"]
    return None if value is None else bool(value)


async def _migrate(db: aiosqlite.Connection) -> None:
    """Add the columns a file from an older version lacks, in one transaction (racing openers add them once)."""
    await db.execute_fetchall("BEGIN IMMEDIATE")
    try:
        have = {row["name"] for row in await db.execute_fetchall("PRAGMA table_info(jobs)")}
        for column, definition in _MIGRATIONS.items():
            if column not in have:
                await db.execute_fetchall(f"ALTER TABLE jobs ADD COLUMN {column} {definition}")
                log.info("job store: added column jobs.%s", column)
        await db.execute_fetchall("COMMIT")
    except BaseException:
        await db.execute_fetchall("ROLLBACK")
        raise


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("job store transaction failed: %r", task.exception())


async def _event(db: aiosqlite.Connection, job_id: str, at: float, event: str, detail: dict[str, Any] | None) -> None:
    await db.execute_fetchall(
        "INSERT INTO job_events (job_id, at, event, detail) VALUES (?, ?, ?, ?)",
        (job_id, _iso(at), event, None if detail is None else _dumps(detail)),
    )
