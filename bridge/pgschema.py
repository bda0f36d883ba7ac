"""cutover's PostgreSQL plumbing: a connection pool that reports an outage, and versioned schemas.

:func:`open_pool` gives the psycopg pool every store uses (autocommit
connections returning dicts, reconnecting in the background forever) or
raises :class:`~bridge.errors.StoreUnavailable` in one line.

Versioned schemas follow :mod:`bridge.schema`'s rule. :func:`migrate` runs
inside the caller's transaction after taking a transaction-level advisory
lock, so replicas that start at once migrate one after the other and the
second finds nothing to do.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from .errors import StoreUnavailable
from .schema import refuse_newer

__all__ = ["fetch_rows", "migrate", "open_migrated", "open_pool", "transact"]

T = TypeVar("T")
log = logging.getLogger(__name__)
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


async def open_migrated(dsn: str, component: str, steps: Sequence[str], *, where: str, max_size: int,
                        timeout: float) -> Any:
    """:func:`open_pool`, with ``component``'s schema brought up to date (:func:`migrate`) before it is returned.

    :raises StoreUnavailable: the database cannot be reached within ``timeout``.
    :raises SchemaError: the database holds a newer version than ``steps`` knows.
    """
    pool = await open_pool(dsn, where=where, max_size=max_size, timeout=timeout)
    try:
        await transact(pool, lambda conn: migrate(conn, component, steps, where), where=where)
    except BaseException:
        await pool.close()
        raise
    return pool


async def transact(pool: Any, body: Callable[[Any], Awaitable[T]], *, where: str) -> T:
    """Run ``body(conn)`` in one transaction on a connection of ``pool``.

    :param where: the database, as messages name it (no password).
    :raises StoreUnavailable: the database is away (a lost connection, or none free within the pool's timeout).
    """
    import psycopg
    from psycopg_pool import PoolTimeout

    try:
        async with pool.connection() as conn:
            async with conn.transaction():
                return await body(conn)
    except (psycopg.OperationalError, PoolTimeout) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise StoreUnavailable(f"PostgreSQL at {where} is unreachable: {first}") from exc


async def fetch_rows(conn: Any, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Every row of one query, as dicts (the pools here make ``dict_row`` connections)."""
    return list(await (await conn.execute(sql, args)).fetchall())


async def migrate(conn: Any, component: str, steps: Sequence[str], where: str) -> int:
    """Bring ``component`` to ``len(steps)`` inside the open transaction on ``conn``; returns the version.

    :param where: the database, as messages name it (no password).
    :raises SchemaError: the database holds a newer version than ``steps`` knows.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
    await conn.execute("CREATE TABLE IF NOT EXISTS cutover_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    row = await (await conn.execute("SELECT version FROM cutover_schema WHERE component = %s", (component,))).fetchone()
    have = 0 if row is None else (row["version"] if isinstance(row, dict) else row[0])
    refuse_newer(component, have, len(steps), where)
    for version in range(have, len(steps)):
        await conn.execute(steps[version])
        log.info("%s schema: migrated to version %d", component, version + 1)
    await conn.execute(
        "INSERT INTO cutover_schema (component, version) VALUES (%s, %s)"
        " ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version", (component, len(steps)))
    return len(steps)
