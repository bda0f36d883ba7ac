"""data_sync ported to a modern @task, and ownership: the two stacks never both process the inbox."""

from __future__ import annotations

import json
from pathlib import Path

from bridge import SharedPool, as_future
from bridge.testing import asyncio_test
from tests.api.conftest import ModernServer, start_legacy
from tests.conftest import until
from tests.legacy.test_data_sync import drop, inbox_empty


def outputs(var: Path) -> dict[str, dict[str, object]]:
    return {p.name: json.loads(p.read_text()) for p in (var / "outbox").rglob("*.json")}


@asyncio_test
async def test_the_modern_task_writes_what_the_legacy_loopingcall_wrote(warm_pool: SharedPool, tmp_path: Path) -> None:
    legacy_var, modern_var = tmp_path / "legacy", tmp_path / "modern"
    for var in (legacy_var, modern_var):
        drop(var, "domains", "a.txt", b"see a.example.com and B.example.org")
        drop(var, "faces", "broken.png", b"not a png")
    legacy, _ = start_legacy(warm_pool, legacy_var, sync_enabled=True, sync_interval=0.05)
    modern = ModernServer(warm_pool, modern_var, sync_enabled=True, sync_interval=0.05)
    await modern.start()
    try:
        await until(lambda: inbox_empty(legacy_var) and inbox_empty(modern_var), "both inboxes to drain")
    finally:
        await as_future(legacy.stop())
        await modern.stop()
    assert outputs(modern_var) == outputs(legacy_var) != {}
    for name in ("failed/faces/broken.png.error.json", "done/domains/a.txt"):
        assert (modern_var / name).read_bytes() == (legacy_var / name).read_bytes()


@asyncio_test
async def test_the_owner_runs_data_sync_and_ownership_moves_at_runtime(warm_pool: SharedPool, tmp_path: Path) -> None:
    owners = {"data_sync": "modern"}
    legacy, _ = start_legacy(warm_pool, tmp_path, sync_enabled=True, sync_interval=0.05, task_owners=owners)
    modern = ModernServer(warm_pool, tmp_path, sync_enabled=True, sync_interval=0.05, task_owners=owners)
    await modern.start()
    state = modern.app.state
    try:
        assert not legacy.data_sync.loop.running
        assert state.tasks.state()["data_sync"]["running"]
        for i in range(5):
            drop(tmp_path, "domains", f"m{i}.txt", f"m{i}.example.com".encode())
        total = lambda: state.data_sync.processed + legacy.data_sync.processed  # noqa: E731
        await until(lambda: inbox_empty(tmp_path) and total() == 5, "the inbox to drain")
        assert (state.data_sync.processed, legacy.data_sync.processed) == (5, 0)

        await state.tasks.set_owner("data_sync", "legacy")  # the plan moves the task back
        await as_future(legacy.tasks.set_owner("data_sync", "legacy"))
        assert not state.tasks.state()["data_sync"]["running"]
        for i in range(5):
            drop(tmp_path, "domains", f"l{i}.txt", f"l{i}.example.com".encode())
        await until(lambda: inbox_empty(tmp_path) and total() == 10, "the inbox to drain again")
        assert (state.data_sync.processed, legacy.data_sync.processed) == (5, 5)
        assert legacy.status()["tasks"]["data_sync"]["owner"] == "legacy"
    finally:
        await as_future(legacy.stop())
        await modern.stop()
    assert len(outputs(tmp_path)) == 10


@asyncio_test
async def test_misconfigured_to_run_in_both_stacks_each_file_is_still_processed_once(
    warm_pool: SharedPool, tmp_path: Path
) -> None:
    both = {"data_sync": "legacy"}  # legacy thinks it owns it; modern is told it owns it too
    legacy, _ = start_legacy(warm_pool, tmp_path, sync_enabled=True, sync_interval=0.01, task_owners=both)
    modern = ModernServer(warm_pool, tmp_path, sync_enabled=True, sync_interval=0.01, task_owners={"data_sync": "modern"})
    await modern.start()
    try:
        for i in range(30):
            drop(tmp_path, "domains", f"f{i:02}.txt", f"f{i}.example.com".encode())
        done_dir = tmp_path / "done" / "domains"
        await until(lambda: inbox_empty(tmp_path) and len(list(done_dir.iterdir())) == 30, "the inbox to drain")
        # Let both stacks run a few more ticks: a file processed twice would show up as a count over 30.
        ticks = legacy.data_sync.runs
        await until(lambda: legacy.data_sync.runs >= ticks + 3, "legacy to tick again")
        done = sorted(p.name for p in done_dir.iterdir())
        processed = legacy.data_sync.processed + modern.app.state.data_sync.processed
    finally:
        await as_future(legacy.stop())
        await modern.stop()
    assert done == [f"f{i:02}.txt" for i in range(30)]
    assert processed == 30  # the lease let one stack at a time through: nothing ran twice
    assert len(outputs(tmp_path)) == 30
