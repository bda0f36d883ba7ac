"""Writes on one SQLite connection: one transaction at a time, each whole, whatever cancels its caller.

Several of cutover's parts share one SQLite file (jobs, the plan's history, the
shadow findings), each on a connection of its own. A transaction left open on
one connection holds the file's write lock, and every other connection's
writes then wait out their busy timeout and fail with "database is locked".
That is what a caller cancelled between its ``INSERT`` and its ``COMMIT`` does
to a plain ``aiosqlite`` connection: the statement ran in the connection's
thread, the commit was never sent. :meth:`SqliteWriter.transact` closes that
gap:

* the transaction runs in a task of its own, shielded from the caller's
  cancellation, so it is committed or rolled back whole;
* transactions on one connection run one after another, so two callers'
  statements never land in one transaction;
* :meth:`SqliteWriter.close` waits for the transaction in flight;
* a write lock still held by another process after the busy timeout raises
  :class:`~bridge.errors.StoreUnavailable`, as a database that is away does:
  nothing was written, and callers that wait out an outage retry it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .errors import StoreUnavailable

__all__ = ["SqliteWriter"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class SqliteWriter:
    """The write side of one ``aiosqlite`` connection opened with ``isolation_level=None``.

    :param db: the connection; it must not be in a transaction.
    :param where: the file, as messages name it.
    """

    def __init__(self, db: Any, *, where: str) -> None:
        self._db: Any = db
        self.where = where
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Future[Any]] = set()

    @property
    def db(self) -> Any:
        if self._db is None:
            raise RuntimeError(f"the SQLite store {self.where} is closed")
        return self._db

    async def transact(self, body: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``body(db)`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``; returns what it returns.

        :raises StoreUnavailable: another connection held the file's write lock past the busy timeout.
        :raises sqlite3.Error: the transaction failed otherwise, and was rolled back.
        :raises RuntimeError: the writer is closed.
        """
        db = self.db

        async def run() -> T:
            async with self._lock:
                if self._db is None:
                    raise RuntimeError(f"the SQLite store {self.where} is closed")
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
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        task.add_done_callback(_retrieve)  # a caller that went away leaves no "exception never retrieved"
        try:
            return await asyncio.shield(task)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            raise StoreUnavailable(f"the SQLite file {self.where} is locked by another writer: {exc}") from exc

    async def flush(self) -> None:
        """Wait until every transaction begun so far has ended, including those whose callers were cancelled."""
        if self._pending:
            await asyncio.wait(set(self._pending))

    async def close(self) -> None:
        """Close the connection once the transactions begun so far have ended; a second call does nothing."""
        await self.flush()
        async with self._lock:
            db, self._db = self._db, None
        if db is not None:
            await db.close()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("SQLite transaction failed: %r", task.exception())
