"""Leases that one replica of a fleet holds at a time, kept in the shared PostgreSQL database.

A :class:`~bridge.tasks.TaskLease` is an ``flock``: it excludes processes of
one machine. Replicas on several machines need the lease where they all look,
the database. A :class:`FleetLease` is a row of ``task_leases``: a name, its
holder and when the hold expires, on the database's clock::

    lease = FleetLease(dsn, "data_sync", ttl=30)
    await lease.open()
    if await lease.hold():     # take it, or renew it if it is ours
        ...                    # this replica runs the task this round
    await lease.release()      # hand it over at once (on stop)

The hold is sticky: its holder renews it every round and keeps it, so a
periodic task stays on one replica instead of hopping. A holder that dies
stops renewing, and after ``ttl`` seconds the next replica to ask takes it
over. ``ttl`` must exceed the task's interval, or the holder loses the lease
between two of its own rounds.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from .errors import StoreUnavailable

__all__ = ["FleetLease"]

_DB_NOW = "extract(epoch from clock_timestamp())"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS task_leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
)
"""


class FleetLease:
    """One named lease shared by every replica on ``dsn`` (see the module docstring)."""

    def __init__(self, dsn: str, name: str, *, ttl: float = 30.0, holder: str | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a lease needs a non-empty name, got {name!r}")
        if not ttl > 0:
            raise ValueError(f"ttl must be positive, got {ttl!r}")
        self.dsn, self.name, self.ttl = dsn, name, float(ttl)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.held = False
        self._conn: Any = None

    async def open(self) -> None:
        """Connect and create the table if missing (the first call does it anyway)."""
        await self._execute("SELECT 1", ())

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def hold(self) -> bool:
        """Take the lease if it is free or expired, renew it if ours: True if this replica holds it now."""
        rows = await self._execute(
            f"INSERT INTO task_leases (name, holder, expires_at) VALUES (%s, %s, {_DB_NOW} + %s)"
            f" ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at"
            f" WHERE task_leases.holder = EXCLUDED.holder OR task_leases.expires_at < {_DB_NOW}"
            f" RETURNING holder", (self.name, self.holder, self.ttl))
        self.held = bool(rows)
        return self.held

    async def release(self) -> None:
        """Give the lease up now, if ours, so the next replica need not wait for it to expire."""
        await self._execute("DELETE FROM task_leases WHERE name = %s AND holder = %s", (self.name, self.holder))
        self.held = False

    async def holder_now(self) -> str | None:
        """Who holds the lease (unexpired), for status pages; None if no one."""
        rows = await self._execute(
            f"SELECT holder FROM task_leases WHERE name = %s AND expires_at >= {_DB_NOW}", (self.name,))
        return rows[0][0] if rows else None

    async def _execute(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        try:
            import psycopg
        except ImportError as exc:
            raise ImportError(f"a fleet lease needs the postgres extra: pip install 'twisted-cutover[postgres]' ({exc})"
                              ) from None
        try:
            if self._conn is None or self._conn.closed:
                conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=5)
                await conn.execute(_SCHEMA)
                self._conn = conn
            cursor = await self._conn.execute(sql, args)
            return list(await cursor.fetchall()) if cursor.description else []
        except psycopg.OperationalError as exc:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()
            self.held = False  # unknown, so not ours: never run the task on a lease we cannot prove
            raise StoreUnavailable(f"the lease {self.name!r} cannot be read: {str(exc).strip().splitlines()[0]}"
                                   ) from exc
