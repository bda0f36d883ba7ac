"""Where shadow traffic's findings are kept: one small interface, SQLite for one host, PostgreSQL for a fleet.

:class:`~bridge.host.shadow.ShadowRecorder` diffs and counts in memory; a
store keeps what must outlive the process or be seen by other replicas:

* ``shadow_mismatches``: each mismatch, with the request, both answers (cut)
  and the readable diff;
* ``shadow_routes``: each route's counts and noise floor, for ``cutover status``;
* ``route_inventory`` and ``unrouted_requests``: who serves what, and what no
  route took.

:class:`SqliteShadowStore` writes beside the host's other state in
``var/cutover.db``. :class:`PostgresShadowStore` writes the same rows with a
``replica`` column into the fleet's database, so every replica's dashboard
lists the whole fleet's mismatches. Both raise
:class:`~bridge.errors.StoreUnavailable` while their database is away, and
the recorder then skips the write and counts it (``unrecorded``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from ..database import parse_database_url
from ..errors import StoreUnavailable
from ..pgschema import fetch_rows, open_migrated, transact
from ..schema import Step, open_sqlite
from ..sqlitewriter import SqliteWriter

__all__ = ["SQLITE_SCHEMA", "Mismatch", "PostgresShadowStore", "ShadowStore", "SqliteShadowStore"]

#: One mismatch as stored: route, method, path, then request, legacy, modern and diff as JSON text, and the diff's text.
Mismatch = tuple[str, str, str, str, str, str, str, str]

#: The SQLite tables as first versioned (``cutover status`` reads them without a host).
SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS shadow_mismatches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    route TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    request TEXT NOT NULL,
    legacy TEXT NOT NULL,
    modern TEXT NOT NULL,
    diff TEXT NOT NULL,
    diff_text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS shadow_by_route ON shadow_mismatches (route, id);
CREATE TABLE IF NOT EXISTS shadow_routes (
    route TEXT PRIMARY KEY,
    compared INTEGER NOT NULL,
    different INTEGER NOT NULL,
    aa_samples INTEGER NOT NULL,
    aa_differing INTEGER NOT NULL,
    noise_fields TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS route_inventory (
    route TEXT PRIMARY KEY,
    in_plan INTEGER NOT NULL,
    mode TEXT NOT NULL,
    in_legacy INTEGER,
    in_modern INTEGER,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS unrouted_requests (
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    requests INTEGER NOT NULL,
    last_status INTEGER NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (method, path)
)
"""
_SQLITE_STEPS: tuple[Step, ...] = (SQLITE_SCHEMA,)

_PG_STEPS: tuple[str, ...] = ("""
CREATE TABLE shadow_mismatches (
    id BIGSERIAL PRIMARY KEY,
    replica TEXT NOT NULL,
    at TEXT NOT NULL,
    route TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    request TEXT NOT NULL,
    legacy TEXT NOT NULL,
    modern TEXT NOT NULL,
    diff TEXT NOT NULL,
    diff_text TEXT NOT NULL
);
CREATE INDEX shadow_by_route ON shadow_mismatches (route, id);
CREATE TABLE shadow_routes (
    replica TEXT NOT NULL,
    route TEXT NOT NULL,
    compared BIGINT NOT NULL,
    different BIGINT NOT NULL,
    aa_samples BIGINT NOT NULL,
    aa_differing BIGINT NOT NULL,
    noise_fields TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (replica, route)
);
CREATE TABLE route_inventory (
    replica TEXT NOT NULL,
    route TEXT NOT NULL,
    in_plan BOOLEAN NOT NULL,
    mode TEXT NOT NULL,
    in_legacy BOOLEAN,
    in_modern BOOLEAN,
    at TEXT NOT NULL,
    PRIMARY KEY (replica, route)
);
CREATE TABLE unrouted_requests (
    replica TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    requests BIGINT NOT NULL,
    last_status INTEGER NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (replica, method, path)
)
""",)
#: After a write finds the database away, the next ones are skipped at once for this long (seconds), not each
#: left to wait out the pool's timeout: shadow work is off the client's path, but it must not pile up.
BACKOFF = 2.0


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _expand(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("request", "legacy", "modern", "diff"):
        row[key] = json.loads(row[key])
    return row


class ShadowStore(Protocol):
    """What :class:`~bridge.host.shadow.ShadowRecorder` needs of a store. Rows are plain dicts."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def add_mismatch(self, mismatch: Mismatch) -> None: ...
    async def save_summary(self, rows: list[tuple[str, int, int, int, int, str]]) -> None: ...
    async def save_inventory(self, rows: list[dict[str, Any]]) -> None: ...
    async def save_unrouted(self, rows: list[dict[str, Any]]) -> None: ...
    async def mismatches(self, route: str | None, limit: int) -> list[dict[str, Any]]: ...
    async def mismatch(self, mismatch_id: int) -> dict[str, Any] | None: ...


class SqliteShadowStore:
    """The findings of one host, in its SQLite file."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._writer: SqliteWriter | None = None

    async def open(self) -> None:
        self._writer = SqliteWriter(await open_sqlite(self.db_path, "shadow", _SQLITE_STEPS), where=str(self.db_path))

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()

    @property
    def writer(self) -> SqliteWriter:
        if self._writer is None:
            raise RuntimeError("the shadow store is not open")
        return self._writer

    @property
    def db(self) -> aiosqlite.Connection:
        return self.writer.db

    async def add_mismatch(self, mismatch: Mismatch) -> None:
        async def add(db: aiosqlite.Connection) -> None:
            await db.execute(
                "INSERT INTO shadow_mismatches (at, route, method, path, request, legacy, modern, diff, diff_text)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (now_iso(), *mismatch))

        await self.writer.transact(add)

    async def save_summary(self, rows: list[tuple[str, int, int, int, int, str]]) -> None:
        at = now_iso()

        async def save(db: aiosqlite.Connection) -> None:
            await db.executemany(
                "INSERT INTO shadow_routes (route, compared, different, aa_samples, aa_differing, noise_fields, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (route) DO UPDATE SET compared = excluded.compared,"
                " different = excluded.different, aa_samples = excluded.aa_samples,"
                " aa_differing = excluded.aa_differing, noise_fields = excluded.noise_fields, at = excluded.at",
                [(*row, at) for row in rows])

        await self.writer.transact(save)

    async def save_inventory(self, rows: list[dict[str, Any]]) -> None:
        at = now_iso()

        async def save(db: aiosqlite.Connection) -> None:
            await db.execute("DELETE FROM route_inventory")
            await db.executemany(
                "INSERT INTO route_inventory (route, in_plan, mode, in_legacy, in_modern, at) VALUES (?, ?, ?, ?, ?, ?)",
                [(r["route"], r["in_plan"], r["mode"], r["in_legacy"], r["in_modern"], at) for r in rows])

        await self.writer.transact(save)

    async def save_unrouted(self, rows: list[dict[str, Any]]) -> None:
        at = now_iso()

        async def save(db: aiosqlite.Connection) -> None:
            await db.executemany(
                "INSERT INTO unrouted_requests (method, path, requests, last_status, at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (method, path) DO UPDATE SET requests = excluded.requests,"
                " last_status = excluded.last_status, at = excluded.at",
                [(r["method"], r["path"], r["requests"], r["last_status"], at) for r in rows])

        await self.writer.transact(save)

    async def mismatches(self, route: str | None, limit: int) -> list[dict[str, Any]]:
        where, args = ("WHERE route = ?", [route]) if route else ("", [])
        rows = await self.db.execute_fetchall(
            f"SELECT id, at, route, method, path, diff_text FROM shadow_mismatches {where} ORDER BY id DESC LIMIT ?",
            (*args, limit))
        return [dict(r) for r in rows]

    async def mismatch(self, mismatch_id: int) -> dict[str, Any] | None:
        rows = list(await self.db.execute_fetchall("SELECT * FROM shadow_mismatches WHERE id = ?", (mismatch_id,)))
        return _expand(dict(rows[0])) if rows else None


class PostgresShadowStore:
    """The findings of every replica, in the fleet's PostgreSQL database; ``replica`` names this one's rows."""

    def __init__(self, dsn: str, *, replica: str, connect_timeout: float = 5.0) -> None:
        self.dsn, self.replica, self.connect_timeout = dsn, replica, connect_timeout
        self._where = str(parse_database_url(dsn))
        self._pool: Any = None
        self._away_until = 0.0

    async def open(self) -> None:
        self._pool = await open_migrated(self.dsn, "shadow", _PG_STEPS, where=self._where, max_size=2,
                                         timeout=self.connect_timeout)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def add_mismatch(self, mismatch: Mismatch) -> None:
        await self._run(lambda conn: conn.execute(
            "INSERT INTO shadow_mismatches (replica, at, route, method, path, request, legacy, modern, diff, diff_text)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", (self.replica, now_iso(), *mismatch)))

    async def save_summary(self, rows: list[tuple[str, int, int, int, int, str]]) -> None:
        at = now_iso()

        async def save(conn: Any) -> None:
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO shadow_routes (replica, route, compared, different, aa_samples, aa_differing,"
                    " noise_fields, at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (replica, route) DO UPDATE"
                    " SET compared = EXCLUDED.compared, different = EXCLUDED.different,"
                    " aa_samples = EXCLUDED.aa_samples, aa_differing = EXCLUDED.aa_differing,"
                    " noise_fields = EXCLUDED.noise_fields, at = EXCLUDED.at",
                    [(self.replica, *row, at) for row in rows])

        await self._run(save)

    async def save_inventory(self, rows: list[dict[str, Any]]) -> None:
        at = now_iso()

        async def save(conn: Any) -> None:
            await conn.execute("DELETE FROM route_inventory WHERE replica = %s", (self.replica,))
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO route_inventory (replica, route, in_plan, mode, in_legacy, in_modern, at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [(self.replica, r["route"], bool(r["in_plan"]), r["mode"], r["in_legacy"], r["in_modern"], at)
                     for r in rows])

        await self._run(save)

    async def save_unrouted(self, rows: list[dict[str, Any]]) -> None:
        at = now_iso()

        async def save(conn: Any) -> None:
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO unrouted_requests (replica, method, path, requests, last_status, at)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (replica, method, path) DO UPDATE"
                    " SET requests = EXCLUDED.requests, last_status = EXCLUDED.last_status, at = EXCLUDED.at",
                    [(self.replica, r["method"], r["path"], r["requests"], r["last_status"], at) for r in rows])

        await self._run(save)

    async def mismatches(self, route: str | None, limit: int) -> list[dict[str, Any]]:
        where, args = ("WHERE route = %s", [route]) if route else ("", [])
        return await self._fetch(
            f"SELECT id, at, route, method, path, diff_text, replica FROM shadow_mismatches {where}"
            " ORDER BY id DESC LIMIT %s", (*args, limit))

    async def mismatch(self, mismatch_id: int) -> dict[str, Any] | None:
        rows = await self._fetch("SELECT * FROM shadow_mismatches WHERE id = %s", (mismatch_id,))
        return _expand(dict(rows[0])) if rows else None

    async def _fetch(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        return await self._run(lambda conn: fetch_rows(conn, sql, args))

    async def _run(self, body: Callable[[Any], Awaitable[Any]]) -> Any:
        if self._pool is None:
            raise RuntimeError("the shadow store is not open")
        if time.monotonic() < self._away_until:
            raise StoreUnavailable(f"PostgreSQL at {self._where} was unreachable moments ago")
        try:
            return await transact(self._pool, body, where=self._where)
        except StoreUnavailable:
            self._away_until = time.monotonic() + BACKOFF
            raise
