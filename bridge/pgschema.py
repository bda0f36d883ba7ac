"""cutover's PostgreSQL plumbing: a connection pool that reports an outage, and versioned schemas.

:func:`open_pool` gives the psycopg pool every store uses (autocommit
connections returning dicts, reconnecting in the background forever) or
raises :class:`~bridge.errors.StoreUnavailable` in one line.

Versioned schemas: each component's steps, applied once, under one lock.

Every component (``jobs``, ``plan``) lists its steps in order; step ``i``
takes it from version ``i`` to ``i + 1`` and is never edited once released.
:func:`migrate` runs inside the caller's transaction after taking a
transaction-level advisory lock, so replicas that start at once migrate one
after the other and the second finds nothing to do. A database whose version
is newer than the code's is refused rather than used half-understood.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from .errors import SchemaError, StoreUnavailable

__all__ = ["migrate", "open_pool"]

log = logging.getLogger("cutover.schema")
_LOCK_KEY = 0x6375746F  # "cuto": the advisory lock that serialises migrations


async def open_pool(dsn: str, *, where: str, max_size: int, timeout: float) -> Any:
    """An open ``psycopg_pool.AsyncConnectionPool`` on ``dsn``.

    :param where: the database, as messages name it (no password).
    :param timeout: how long opening, and later each wait for a connection, may take.
    :raises StoreUnavailable: the database cannot be reached within ``timeout``.
    """
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(
        dsn, min_size=1, max_size=max_size, open=False, timeout=timeout,
        # autocommit: one-statement calls pay no BEGIN/COMMIT round trips; the others open a transaction
        kwargs={"row_factory": dict_row, "autocommit": True, "connect_timeout": max(1, round(timeout))},
        reconnect_timeout=0,  # retry forever in the background; callers see StoreUnavailable meanwhile
    )
    try:
        await pool.open(wait=True, timeout=timeout)
    except Exception as exc:
        await pool.close()
        raise StoreUnavailable(f"cannot reach PostgreSQL at {where}: {exc}") from exc
    return pool


async def migrate(conn: Any, component: str, steps: Sequence[str], where: str) -> int:
    """Bring ``component`` to ``len(steps)`` inside the open transaction on ``conn``; returns the version.

    :param where: the database, as messages name it (no password).
    :raises SchemaError: the database holds a newer version than ``steps`` knows.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
    await conn.execute("CREATE TABLE IF NOT EXISTS cutover_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    row = await (await conn.execute("SELECT version FROM cutover_schema WHERE component = %s", (component,))).fetchone()
    have = 0 if row is None else (row["version"] if isinstance(row, dict) else row[0])
    if have > len(steps):
        raise SchemaError(
            f"the database at {where} has {component} schema version {have}, newer than this cutover's "
            f"{len(steps)}: upgrade cutover on this replica before it uses that database"
        )
    for version in range(have, len(steps)):
        await conn.execute(steps[version])
        log.info("%s schema: migrated to version %d", component, version + 1)
    await conn.execute(
        "INSERT INTO cutover_schema (component, version) VALUES (%s, %s)"
        " ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version", (component, len(steps)))
    return len(steps)
