"""Durable jobs on PostgreSQL, shared by every replica of a service.

The same records, states, events and API as :class:`bridge.jobstore.JobStore`
(SQLite), so :class:`bridge.jobs.JobRunner` and an app's handlers use either.
What changes with several machines:

* **Claims** take the oldest due job with ``FOR UPDATE SKIP LOCKED``: any
  number of runners, in any number of replicas, claim at once and never the
  same job.
* **Runner leases are heartbeats, not a lock file.** Every runner writes its
  ``job_runners`` row every ``lease_ttl / 3`` seconds, on the database's own
  clock (machines' clocks disagree; the database's is the one they share). A
  running job whose runner has not beaten for ``lease_ttl`` seconds belongs to
  a dead or cut-off runner, and any other runner reclaims it by the rule of
  :func:`bridge.jobrecord.reclaim_decision`. Delivery is at least once: a
  runner that was only cut off may still finish, and then its settle finds
  the claim gone and changes nothing.
* **Wake-ups** cross machines through ``LISTEN``/``NOTIFY`` on the channel
  ``cutover_jobs``; the runner's poll is the fallback.
* **The schema** is versioned in ``cutover_schema`` and migrated on open under
  an advisory lock, so replicas starting at once migrate it once. A database
  whose schema is newer than this code is refused (:class:`SchemaError`).
* **A database that is down** raises :class:`bridge.errors.StoreUnavailable`
  from every call, at once rather than after a hang; the connection pool
  reconnects by itself when it returns.

The driver is psycopg 3 (the ``postgres`` extra): the PostgreSQL project's own
adapter family, async with ``LISTEN``/``NOTIFY``, and a maintained connection
pool (``psycopg_pool``). procrastinate runs on it for the same reasons.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from .errors import JobFinished, JobNotFound, StoreUnavailable
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
from .pgschema import migrate, open_pool

__all__ = ["SCHEMA_VERSION", "PostgresJobStore"]

T = TypeVar("T")
log = logging.getLogger(__name__)
CHANNEL = "cutover_jobs"
_COLUMNS = RECORD_COLUMNS
_DB_NOW = "extract(epoch from clock_timestamp())"
_CLAIM_COLUMNS = "c.id, c.kind, c.status, c.attempts, c.created_at, c.started_at, c.finished_at, c.params, c.result, c.error, c.idempotency_key, c.attempt_started"

#: Each step takes the schema from version ``i`` to ``i + 1``; a step is never edited once released.
_STEPS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        id              TEXT PRIMARY KEY,
        kind            TEXT NOT NULL,
        status          TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        created_at      TEXT NOT NULL,
        started_at      TEXT,
        finished_at     TEXT,
        run_after       DOUBLE PRECISION NOT NULL,
        runner          TEXT,
        params          TEXT NOT NULL,
        payload         BYTEA NOT NULL,
        result          TEXT,
        error           TEXT,
        idempotency_key TEXT UNIQUE,
        attempt_started INTEGER
    );
    CREATE INDEX jobs_due ON jobs (created_at, id) WHERE status = 'queued';
    CREATE INDEX jobs_by_status ON jobs (status, created_at, id);
    CREATE INDEX jobs_by_age ON jobs (created_at, id);
    CREATE INDEX jobs_running ON jobs (runner) WHERE status = 'running';
    CREATE TABLE job_events (
        seq    BIGSERIAL PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs (id),
        at     TEXT NOT NULL,
        event  TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX job_events_by_job ON job_events (job_id, seq);
    CREATE TABLE job_runners (
        id           TEXT PRIMARY KEY,
        heartbeat_at DOUBLE PRECISION NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(_STEPS)


def _driver() -> tuple[Any, Any, Any]:
    try:
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool
    except ImportError as exc:
        raise ImportError(
            f"PostgreSQL needs the postgres extra: pip install 'twisted-cutover[postgres]' ({exc})"
        ) from None
    return psycopg, dict_row, AsyncConnectionPool


class PostgresJobStore:
    """Jobs in one PostgreSQL database, shared by any number of processes and machines.

    Open it with ``async with PostgresJobStore(dsn) as store:``. ``lease_ttl``
    is how long a silent runner keeps its claims; ``connect_timeout`` bounds
    how long a call waits for a connection before :class:`StoreUnavailable`.
    """

    #: Every runner works at once; each keeps a heartbeat lease (see the module's docstring).
    shared_runners = True
    engine = "postgresql"

    def __init__(
        self,
        dsn: str,
        *,
        on_submit: Callable[[JobRecord], object] | None = None,
        lease_ttl: float = 30.0,
        connect_timeout: float = 5.0,
        max_connections: int = 8,
    ) -> None:
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be positive, got {lease_ttl!r}")
        self.dsn = dsn
        self.lease_ttl = lease_ttl
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.path = "postgresql"  # where a SQLite store names its file, for messages
        self._listeners = SubmitListeners(on_submit)
        self._pool: Any = None
        self._listen_task: asyncio.Task[None] | None = None
        self._telling: set[asyncio.Task[None]] = set()  # held, so a pending lookup is never garbage-collected
        self._token = uuid.uuid4().hex[:12]  # our own NOTIFYs come back to us: skip them
        #: False from a call that found the database away until one that reaches it: what ``/status`` shows.
        self.reachable = True

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Connect, migrate the schema under the advisory lock, and start listening for other replicas' jobs."""
        if self._pool is not None:
            raise RuntimeError("the job store is already open")
        _driver()  # the postgres extra, or a clear ImportError
        pool = await open_pool(self.dsn, where=_where(self.dsn), max_size=self.max_connections,
                               timeout=self.connect_timeout)
        self._pool = pool
        try:
            await self._migrate()
        except BaseException:
            self._pool = None
            await pool.close()
            raise
        self._listen_task = asyncio.ensure_future(self._listen())

    async def close(self) -> None:
        """Stop listening and close every connection. Safe to call twice."""
        task, self._listen_task = self._listen_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> PostgresJobStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def subscribe(self, callback: Callable[[JobRecord], object]) -> Callable[[], None]:
        """Call ``callback(record)`` after each new job commits, here or on another replica."""
        return self._listeners.subscribe(callback)

    async def _migrate(self) -> None:
        await self._transaction(lambda conn: migrate(conn, "jobs", _STEPS, _where(self.dsn)))

    async def _listen(self) -> None:
        """Hear jobs submitted by other replicas, reconnecting while the database is away."""
        psycopg, dict_row, _ = _driver()
        delay = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, row_factory=dict_row,
                    connect_timeout=max(1, round(self.connect_timeout)))
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    delay = 0.5
                    async for note in conn.notifies():
                        token, _, job_id = note.payload.partition(":")
                        if token != self._token:
                            self._heard(job_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: every call says so; we come back with it
                log.debug("job store: LISTEN connection lost (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _heard(self, job_id: str) -> None:
        async def tell() -> None:
            try:
                record = await self.get(job_id)
            except Exception:  # noqa: BLE001  (a poll will find it)
                return
            if record is not None:
                self._listeners.tell(record)

        task = asyncio.ensure_future(tell())
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    # ------------------------------------------------------------------ the client's side

    async def submit(
        self, kind: str, payload: bytes, params: dict[str, Any], *, idempotency_key: str | None = None,
        hold: bool = False,
    ) -> tuple[JobRecord, bool]:
        """Queue a job; returns ``(record, created)``, as :meth:`bridge.jobstore.JobStore.submit` does.

        The idempotency key is a UNIQUE column: racing submits on any replica make one job.
        ``hold=True`` records it as never due, so no runner claims it.
        """
        params_json = validate_submit(kind, payload, params)
        job_id, now = uuid.uuid4().hex, time.time()
        run_after = math.inf if hold else now

        async def insert(conn: Any) -> tuple[dict[str, Any], bool]:
            created = await (await conn.execute(
                f"INSERT INTO jobs (id, kind, status, created_at, run_after, params, payload, idempotency_key)"
                f" VALUES (%s, %s, 'queued', %s, %s, %s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING"
                f" RETURNING {_COLUMNS}",
                (job_id, kind, iso_time(now), run_after, params_json, bytes(payload), idempotency_key),
            )).fetchone()
            if created is not None:
                detail = {"idempotency_key": idempotency_key} if idempotency_key is not None else None
                await _event(conn, job_id, now, "submitted", detail)
                await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{self._token}:{job_id}"))
                return created, True
            existing = await (await conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE idempotency_key = %s", (idempotency_key,))).fetchone()
            return existing, False

        row, created = await self._transaction(insert)
        record = JobRecord.from_row(row)
        if created:
            self._listeners.tell(record)
        return record, created

    async def get(self, job_id: str) -> JobRecord | None:
        rows = await self._read(f"SELECT {_COLUMNS} FROM jobs WHERE id = %s", (job_id,))
        return JobRecord.from_row(rows[0]) if rows else None

    async def payload(self, job_id: str) -> bytes:
        rows = await self._read("SELECT payload FROM jobs WHERE id = %s", (job_id,))
        if not rows:
            raise JobNotFound(f"no job {job_id!r}")
        return bytes(rows[0]["payload"])

    async def list(
        self, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        """A page of jobs, newest first, and the next page's cursor or None (a keyset, never an offset)."""
        list_filters(status, limit)
        where: list[str] = []
        args: list[Any] = []
        if status is not None:
            where.append("status = %s")
            args.append(status)
        if cursor is not None:
            where.append("(created_at, id) < (%s, %s)")
            args.extend(decode_cursor(cursor))
        sql = f"SELECT {_COLUMNS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self._read(sql + " ORDER BY created_at DESC, id DESC LIMIT %s", (*args, limit + 1))
        records = [JobRecord.from_row(row) for row in rows[:limit]]
        return records, (encode_cursor(records[-1]) if len(rows) > limit else None)

    async def cancel(self, job_id: str) -> JobRecord:
        """Mark a queued or running job cancelled; raises :class:`JobNotFound` or :class:`JobFinished`."""
        now = time.time()
        error = {"code": "cancelled", "message": "the job was cancelled"}

        async def cancel(conn: Any) -> dict[str, Any]:
            row = await (await conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE id = %s FOR UPDATE", (job_id,))).fetchone()
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            if row["status"] in FINAL_STATUSES:
                raise JobFinished(JobRecord.from_row(row))
            updated = await (await conn.execute(
                f"UPDATE jobs SET status = 'cancelled', finished_at = %s, error = %s WHERE id = %s"
                f" RETURNING {_COLUMNS}", (iso_time(now), dumps_json(error), job_id))).fetchone()
            await _event(conn, job_id, now, "cancelled", {"was": row["status"]})
            return updated

        return JobRecord.from_row(await self._transaction(cancel))

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        """The job's audit trail, oldest first. Raises :class:`JobNotFound`."""
        rows = await self._read(
            "SELECT at, event, detail FROM job_events WHERE job_id = %s ORDER BY seq", (job_id,))
        if not rows:
            raise JobNotFound(f"no job {job_id!r}")
        return [{"at": r["at"], "event": r["event"], "detail": None if r["detail"] is None else json.loads(r["detail"])}
                for r in rows]

    # ------------------------------------------------------------------ the runner's side

    async def heartbeat(self, runner: str) -> None:
        """Renew ``runner``'s lease on its claims, on the database's clock."""
        await self._transaction(lambda conn: conn.execute(
            f"INSERT INTO job_runners (id, heartbeat_at) VALUES (%s, {_DB_NOW})"
            f" ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at", (runner,)), single=True)

    async def retire(self, runner: str) -> None:
        """Drop ``runner``'s lease row (it stopped and put its jobs back)."""
        await self._transaction(lambda conn: conn.execute("DELETE FROM job_runners WHERE id = %s", (runner,)),
                                single=True)

    async def claim(self, runner: str) -> tuple[JobRecord | None, int, float | None]:
        """Take the oldest due queued job that no one else is taking: ``(record or None, queued left, next run_after)``."""
        now = time.time()

        async def claim(conn: Any) -> tuple[dict[str, Any] | None, int, float | None]:
            # One statement: pick, claim, log, count. Every part sees the snapshot from before the
            # claim, so the count still holds the claimed job: it is taken off by hand.
            row = await (await conn.execute(
                f"WITH picked AS (SELECT id FROM jobs WHERE status = 'queued' AND run_after <= %(now)s"
                f"                ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED),"
                f" c AS (UPDATE jobs j SET status = 'running', attempts = j.attempts + 1, started_at = %(iso)s,"
                f"        runner = %(runner)s, attempt_started = 0 FROM picked WHERE j.id = picked.id"
                f"        RETURNING j.*),"
                f" e AS (INSERT INTO job_events (job_id, at, event, detail)"
                f"        SELECT id, %(iso)s, 'started', jsonb_build_object('attempt', attempts, 'runner', %(runner)s)::text"
                f"        FROM c)"
                f" SELECT {_CLAIM_COLUMNS}, q.n - (SELECT COUNT(*) FROM c) AS left_n, q.next AS left_next"
                f" FROM (SELECT COUNT(*) AS n, MIN(run_after) AS next FROM jobs WHERE status = 'queued') q"
                f" LEFT JOIN c ON true",
                {"now": now, "iso": iso_time(now), "runner": runner},
            )).fetchone()
            return (row if row["id"] is not None else None), int(row["left_n"]), row["left_next"]

        row, queued, next_at = await self._transaction(claim, single=True)
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

        async def settle(conn: Any) -> bool:
            row = await (await conn.execute(
                "WITH s AS (UPDATE jobs SET status = %(status)s, finished_at = %(finished)s, result = %(result)s,"
                "           error = %(error)s, run_after = COALESCE(%(run_after)s, run_after)"
                "           WHERE id = %(id)s AND status = 'running' AND runner = %(runner)s AND attempts = %(attempts)s"
                "           RETURNING attempt_started),"
                " e AS (INSERT INTO job_events (job_id, at, event, detail)"
                "       SELECT %(id)s, %(at)s, %(event)s, (%(detail)s::jsonb || jsonb_build_object('started',"
                "              CASE WHEN attempt_started IS NULL THEN NULL ELSE attempt_started = 1 END))::text FROM s)"
                " SELECT attempt_started FROM s",
                {"status": status, "finished": finished, "result": result,
                 "error": None if error is None else dumps_json(error), "run_after": run_after, "id": claimed.id,
                 "runner": runner, "attempts": claimed.attempts, "at": iso_time(now), "event": event,
                 "detail": dumps_json(detail)},
            )).fetchone()
            return row is not None

        return await self._transaction(settle, single=True)

    async def mark_started(self, claimed: JobRecord, runner: str) -> bool:
        """The claimed attempt's call began on a worker; False if the claim was lost meanwhile."""

        async def mark(conn: Any) -> bool:
            row = await (await conn.execute(
                "UPDATE jobs SET attempt_started = 1"
                " WHERE id = %s AND status = 'running' AND runner = %s AND attempts = %s RETURNING id",
                (claimed.id, runner, claimed.attempts))).fetchone()
            return row is not None

        return await self._transaction(mark, single=True)

    async def interrupt(self, runner: str) -> list[str]:
        """Put back every job this runner still has running, refunding the attempt; returns their ids."""
        now = time.time()

        async def interrupt(conn: Any) -> list[str]:
            rows = await (await conn.execute(
                "UPDATE jobs SET status = 'queued', attempts = attempts - 1, run_after = %s"
                " WHERE status = 'running' AND runner = %s RETURNING id, attempts, attempt_started",
                (now, runner))).fetchall()
            for row in rows:
                detail = {"attempt": row["attempts"] + 1, "runner": runner, "started": started_flag(row)}
                await _event(conn, row["id"], now, "interrupted", detail)
            if rows:
                await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{self._token}:"))
            return [row["id"] for row in rows]

        return await self._transaction(interrupt)

    async def reclaim(self, runner: str, max_attempts: Mapping[str, int]) -> tuple[list[str], list[str]]:
        """Take back the running jobs of runners silent for ``lease_ttl``: ``(requeued ids, failed ids)``.

        Who is charged follows :func:`bridge.jobrecord.reclaim_decision`, as on SQLite.
        """
        now = time.time()

        async def reclaim(conn: Any) -> tuple[list[str], list[str]]:
            requeued, failed = [], []
            rows = await (await conn.execute(
                f"SELECT j.id, j.kind, j.attempts, j.runner, j.attempt_started FROM jobs j"
                f" LEFT JOIN job_runners r ON r.id = j.runner"
                f" WHERE j.status = 'running' AND j.runner IS DISTINCT FROM %s"
                f"   AND (r.id IS NULL OR r.heartbeat_at < {_DB_NOW} - %s)"
                f" FOR UPDATE OF j SKIP LOCKED", (runner, self.lease_ttl))).fetchall()
            for row in rows:
                decision = reclaim_decision(row, max_attempts.get(row["kind"]))
                detail = {"attempt": row["attempts"], "previous_runner": row["runner"], "runner": runner,
                          "started": started_flag(row)}
                if decision == "requeue":
                    await conn.execute(
                        "UPDATE jobs SET status = 'queued', attempts = attempts - 1, run_after = %s WHERE id = %s",
                        (now, row["id"]))
                    await _event(conn, row["id"], now, "reclaimed", {**detail, "charged": False})
                    requeued.append(row["id"])
                elif decision == "fail":
                    error = {"code": "worker_crashed",
                             "message": f"the runner died while running this job, after {attempts_text(row['attempts'])}"}
                    await conn.execute(
                        "UPDATE jobs SET status = 'failed', finished_at = %s, error = %s WHERE id = %s",
                        (iso_time(now), dumps_json(error), row["id"]))
                    await _event(conn, row["id"], now, "failed", {**detail, "code": "worker_crashed"})
                    failed.append(row["id"])
                else:
                    await conn.execute("UPDATE jobs SET status = 'queued', run_after = %s WHERE id = %s",
                                       (now, row["id"]))
                    await _event(conn, row["id"], now, "reclaimed", {**detail, "charged": True})
                    requeued.append(row["id"])
            await conn.execute(f"DELETE FROM job_runners WHERE heartbeat_at < {_DB_NOW} - %s", (self.lease_ttl,))
            if requeued:
                await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{self._token}:"))
            return requeued, failed

        return await self._transaction(reclaim)

    async def claims(self, job_ids: list[str]) -> dict[str, tuple[str, str | None, int]]:
        """``{id: (status, runner, attempts)}``: lets a runner notice cancellations made elsewhere."""
        rows = await self._read("SELECT id, status, runner, attempts FROM jobs WHERE id = ANY(%s)", (job_ids,))
        return {r["id"]: (r["status"], r["runner"], r["attempts"]) for r in rows}

    # ------------------------------------------------------------------ plumbing

    async def _read(self, sql: str, args: tuple[Any, ...] | list[Any]) -> list[dict[str, Any]]:
        return await self._transaction(lambda conn: _fetchall(conn, sql, args), single=True)

    async def _transaction(self, body: Callable[[Any], Awaitable[T]], *, single: bool = False) -> T:
        """Run ``body`` in one transaction on a pooled connection, shielded from the caller's cancellation.

        ``single``: the body is one statement, atomic by itself, so no BEGIN/COMMIT is sent.
        """
        pool = self._pool
        if pool is None:
            raise RuntimeError("the PostgreSQL job store is not open: use `async with PostgresJobStore(dsn):`")
        psycopg, _, _ = _driver()
        from psycopg_pool import PoolTimeout

        async def run() -> T:
            try:
                async with pool.connection() as conn:
                    if single:
                        result = await body(conn)
                    else:
                        async with conn.transaction():
                            result = await body(conn)
            except (psycopg.OperationalError, PoolTimeout) as exc:
                self.reachable = False
                raise StoreUnavailable(f"PostgreSQL at {_where(self.dsn)} is unreachable: {_first_line(exc)}") from exc
            self.reachable = True
            return result

        task = asyncio.ensure_future(run())
        task.add_done_callback(_retrieve)
        return await asyncio.shield(task)


async def _fetchall(conn: Any, sql: str, args: tuple[Any, ...] | list[Any]) -> list[dict[str, Any]]:
    return list(await (await conn.execute(sql, args)).fetchall())


async def _event(conn: Any, job_id: str, at: float, event: str, detail: dict[str, Any] | None) -> None:
    await conn.execute(
        "INSERT INTO job_events (job_id, at, event, detail) VALUES (%s, %s, %s, %s)",
        (job_id, iso_time(at), event, None if detail is None else dumps_json(detail)),
    )


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("job store transaction failed: %r", task.exception())


def _where(dsn: str) -> str:
    from .database import parse_database_url

    try:
        return str(parse_database_url(dsn))
    except ValueError:
        return "the configured database"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
