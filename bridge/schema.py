"""Versioned schemas, one rule for both engines: steps applied once, in order, under a lock.

Every component of cutover's state (``jobs``, ``plan``, ``shadow``) lists its
steps in order. Step ``i`` takes the component from version ``i`` to
``i + 1`` and is never edited once released; a change of shape is a new
step. The version each component is at is a row of ``cutover_schema`` in the
same database, so a file or database shared by several components holds all
their versions.

* On PostgreSQL (:func:`bridge.pgschema.migrate`) the steps run under a
  transaction-level advisory lock.
* On SQLite (:func:`migrate_sqlite`) they run inside ``BEGIN IMMEDIATE``,
  which holds the file's write lock, so two processes opening one file at
  once migrate it once.

Either way, a database whose version is newer than the code's is refused
(:class:`~bridge.errors.SchemaError`) instead of being used half-understood.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import SchemaError

__all__ = ["Step", "migrate_sqlite", "open_sqlite", "refuse_newer"]

log = logging.getLogger(__name__)

#: A step: SQL statements separated by ``;``, or a coroutine function given the connection.
Step = str | Callable[[Any], Awaitable[None]]

_TABLE = "CREATE TABLE IF NOT EXISTS cutover_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"


def refuse_newer(component: str, have: int, knows: int, where: str) -> None:
    """Raise when the database's ``component`` is at a version this code does not know.

    :raises SchemaError: ``have`` is above ``knows``.
    """
    if have > knows:
        raise SchemaError(
            f"the database at {where} has {component} schema version {have}, newer than this cutover's "
            f"{knows}: upgrade cutover on this replica before it uses that database"
        )


def statements(script: str) -> list[str]:
    """The statements of an SQL script, cut where SQLite's own tokenizer says one is complete.

    (``executescript`` would run them, but it commits the open transaction first.)
    """
    found, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    if pending.strip() and not all(part.strip().startswith("--") or not part.strip() for part in pending.splitlines()):
        found.append(pending.strip())  # a last statement without its ";"
    return found


async def open_sqlite(path: Path, component: str, steps: Sequence[Step]) -> Any:
    """An ``aiosqlite`` connection to ``path`` (made, with its folder, if missing) in WAL mode, rows as
    :class:`aiosqlite.Row`, with ``component``'s schema brought up to date.

    The connection is in autocommit mode (``isolation_level=None``): sqlite3 never opens a transaction
    behind the caller's back, so writes of more than one statement go through
    :meth:`bridge.sqlitewriter.SqliteWriter.transact`.

    :raises SchemaError: the file holds a newer version than ``steps`` knows.
    """
    import aiosqlite

    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        await migrate_sqlite(db, component, steps, str(path))
    except BaseException:
        await db.close()
        raise
    return db


async def migrate_sqlite(db: Any, component: str, steps: Sequence[Step], where: str) -> int:
    """Bring ``component`` to ``len(steps)`` in one ``BEGIN IMMEDIATE`` transaction on ``db``; returns the version.

    :param db: an ``aiosqlite`` connection with no transaction open.
    :param where: the file, as messages name it.
    :raises SchemaError: the file holds a newer version than ``steps`` knows.
    """
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute(_TABLE)
        async with db.execute("SELECT version FROM cutover_schema WHERE component = ?", (component,)) as cursor:
            row = await cursor.fetchone()
        have = 0 if row is None else int(row[0])
        refuse_newer(component, have, len(steps), where)
        for version in range(have, len(steps)):
            step = steps[version]
            if isinstance(step, str):
                for statement in statements(step):
                    await db.execute(statement)
            else:
                await step(db)
            log.info("%s schema in %s: migrated to version %d", component, where, version + 1)
        if have != len(steps):
            await db.execute(
                "INSERT INTO cutover_schema (component, version) VALUES (?, ?)"
                " ON CONFLICT (component) DO UPDATE SET version = excluded.version", (component, len(steps)))
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise
    return len(steps)
