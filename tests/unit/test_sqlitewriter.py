"""One SQLite file, several connections: a writer cancelled half-way never leaves the file's write lock held.

The host keeps the plan's history, the shadow findings and the jobs in one
file, each on a connection of its own. Before :class:`bridge.sqlitewriter.SqliteWriter`,
a periodic task cancelled at shutdown between its ``INSERT`` and its
``COMMIT`` left its connection inside a transaction, and the shadow summary
written a moment later failed with "database is locked" after the busy timeout.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bridge.errors import StoreUnavailable
from bridge.host.history import PlanStore
from bridge.host.shadowstore import SqliteShadowStore
from bridge.sqlitewriter import SqliteWriter
from bridge.testing import asyncio_test
from tests.conftest import WAIT


def counts(path: Path) -> tuple[int, int]:
    """(samples, unrouted rows), read by a connection of the test's own."""
    with sqlite3.connect(path, timeout=0) as conn:
        return (conn.execute("SELECT COUNT(*) FROM evidence_samples").fetchone()[0],
                conn.execute("SELECT COUNT(*) FROM unrouted_requests").fetchone()[0])


def write_lock_free(path: Path) -> bool:
    """True when another connection can take the file's write lock at once."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


@asyncio_test
async def test_a_history_write_cancelled_at_any_await_is_whole_or_absent_and_never_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "cutover.db"
    history, shadow = PlanStore(path), SqliteShadowStore(path)
    await history.open()
    await shadow.open()
    try:
        routes = {f"GET /r{n}": {"requests": n} for n in range(6)}  # one INSERT, then a DELETE per route
        for turns in range(12):  # cancel after 0, 1, 2, ... loop turns: every point of the transaction
            before = counts(path)[0]
            adding = asyncio.ensure_future(history.add_samples(routes))
            for _ in range(turns):
                await asyncio.sleep(0)
            adding.cancel()
            with pytest.raises(asyncio.CancelledError):
                await adding
            await asyncio.wait_for(history.writer.flush(), WAIT)  # the shielded transaction ends by itself
            assert write_lock_free(path), turns
            assert counts(path)[0] - before in (0, len(routes)), turns
            # another connection's write goes through at once
            rows = [{"method": "GET", "path": f"/x{turns}", "requests": 1, "last_status": 404}]
            await asyncio.wait_for(shadow.save_unrouted(rows), WAIT)
            assert counts(path)[1] == turns + 1
    finally:
        await shadow.close()
        await history.close()


async def open_writer(path: Path, busy_timeout: float = 5.0) -> SqliteWriter:
    db = await aiosqlite.connect(path, isolation_level=None, timeout=busy_timeout)
    await db.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
    return SqliteWriter(db, where=str(path))


@asyncio_test
async def test_a_failing_body_rolls_back_and_the_writer_goes_on(tmp_path: Path) -> None:
    writer = await open_writer(tmp_path / "w.db")
    try:
        async def half(db: Any) -> None:
            await db.execute("INSERT INTO t VALUES (1)")
            raise ValueError("no")

        with pytest.raises(ValueError, match="no"):
            await writer.transact(half)

        async def insert(db: Any) -> int:
            cursor = await db.execute("INSERT INTO t VALUES (2)")
            return int(cursor.lastrowid)

        assert await writer.transact(insert) == 1  # the first row never landed
        assert [tuple(r) for r in await writer.db.execute_fetchall("SELECT n FROM t")] == [(2,)]
    finally:
        await writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        await writer.transact(insert)
    await writer.close()  # a second close does nothing


@asyncio_test
async def test_two_callers_transactions_never_mix_and_close_waits_for_the_one_in_flight(tmp_path: Path) -> None:
    writer = await open_writer(tmp_path / "w.db")
    inside = asyncio.Event()
    release = asyncio.Event()

    async def slow(db: Any) -> None:
        await db.execute("INSERT INTO t VALUES (1)")
        inside.set()
        await release.wait()
        await db.execute("INSERT INTO t VALUES (2)")

    async def failing(db: Any) -> None:
        await db.execute("INSERT INTO t VALUES (3)")
        raise ValueError("rolled back alone")

    first = asyncio.ensure_future(writer.transact(slow))
    await asyncio.wait_for(inside.wait(), WAIT)
    second = asyncio.ensure_future(writer.transact(failing))  # waits its turn; its rollback cannot undo slow's rows
    closing = asyncio.ensure_future(writer.close())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not first.done() and not second.done() and not closing.done()
    release.set()
    await asyncio.wait_for(first, WAIT)
    with pytest.raises((ValueError, RuntimeError)):
        await asyncio.wait_for(second, WAIT)
    await asyncio.wait_for(closing, WAIT)
    with sqlite3.connect(tmp_path / "w.db") as conn:
        assert conn.execute("SELECT n FROM t ORDER BY n").fetchall() == [(1,), (2,)]


@asyncio_test
async def test_a_lock_held_elsewhere_past_the_busy_timeout_is_store_unavailable_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    writer = await open_writer(path, busy_timeout=0.05)
    other = sqlite3.connect(path, timeout=0, isolation_level=None)  # another process's writer, mid-transaction
    try:
        other.execute("BEGIN IMMEDIATE")

        async def insert(db: Any) -> None:
            await db.execute("INSERT INTO t VALUES (7)")

        with pytest.raises(StoreUnavailable, match="locked") as caught:
            await writer.transact(insert)
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        other.execute("ROLLBACK")
        await writer.transact(insert)  # the lock is free again: the same write goes through
        assert [tuple(r) for r in await writer.db.execute_fetchall("SELECT n FROM t")] == [(7,)]
    finally:
        other.close()
        await writer.close()
