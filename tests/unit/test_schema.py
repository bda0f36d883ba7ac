"""Versioned SQLite schemas: migrated once on open (also by processes racing), older files brought up, newer refused."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from bridge.errors import SchemaError
from bridge.host.history import PlanStore
from bridge.host.shadowstore import SqliteShadowStore
from bridge.jobstore import JobStore
from bridge.testing import asyncio_test


def versions(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT component, version FROM cutover_schema").fetchall())


async def open_all(path: Path) -> None:
    async with JobStore(path):
        pass
    plans, shadow = PlanStore(path), SqliteShadowStore(path)
    await plans.open()
    await shadow.open()
    await shadow.close()
    await plans.close()


@asyncio_test
async def test_one_file_holds_each_components_version_and_a_second_open_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cutover.db"
    await open_all(path)
    assert versions(path) == {"jobs": 1, "plan": 1, "shadow": 1}
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"jobs", "job_events", "plan_changes", "route_evidence", "shadow_mismatches", "cutover_schema"} <= tables
    await open_all(path)
    assert versions(path) == {"jobs": 1, "plan": 1, "shadow": 1}


@pytest.mark.parametrize("component", ["jobs", "plan", "shadow"])
@asyncio_test
async def test_a_file_from_a_newer_cutover_is_refused_with_the_file_and_both_versions(
        tmp_path: Path, component: str) -> None:
    path = tmp_path / "cutover.db"
    await open_all(path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE cutover_schema SET version = 7 WHERE component = ?", (component,))
    store = {"jobs": JobStore, "plan": PlanStore, "shadow": SqliteShadowStore}[component](path)
    with pytest.raises(SchemaError, match=rf"{path}.*{component} schema version 7, newer than this cutover's 1"):
        await store.open()
    await store.close()
    assert versions(path)[component] == 7  # refused, not rewritten


def _open_in_a_process(path: str) -> None:
    import asyncio

    asyncio.run(open_all(Path(path)))


def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "cutover.db"
    context = multiprocessing.get_context("spawn")
    racers = [context.Process(target=_open_in_a_process, args=(str(path),)) for _ in range(4)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=120)
    assert [r.exitcode for r in racers] == [0, 0, 0, 0]
    assert versions(path) == {"jobs": 1, "plan": 1, "shadow": 1}
