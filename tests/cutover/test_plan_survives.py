"""Run-time changes outlive the host: a task's owner and a route's mode come back after a restart, and an edited file wins."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bridge import SharedPool
from bridge.testing import asyncio_test
from tests.conftest import WAIT
from tests.cutover.conftest import TOKEN, start_host


async def stop(server: object, serving: object) -> None:
    server.should_exit = True  # type: ignore[attr-defined]
    await serving  # type: ignore[misc]


@asyncio_test
async def test_a_moved_task_and_route_survive_a_restart_and_an_edited_file_wins(
        warm_pool: SharedPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUTOVER_VAR", str(tmp_path / "var"))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    host, server, serving, url = await start_host(warm_pool, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=WAIT, headers=headers) as admin:
            moved = await admin.post("/_cutover/api/tasks", json={"task": "data_sync", "owner": "modern", "why": "try it"})
            assert moved.status_code == 200, moved.text
            forced = await admin.post("/_cutover/api/routes", json={
                "method": "POST", "template": "/v1/ocr", "mode": "canary", "percent": 20, "force": True})
            assert forced.status_code == 200, forced.text
            before = (await admin.get("/_cutover/api/history")).json()["changes"]
    finally:
        await stop(server, serving)
    assert [(c["kind"], c["key"], c["to"]) for c in before] == [
        ("route", "POST /v1/ocr", {"mode": "canary", "percent": 20.0}), ("task", "data_sync", "modern")]

    host, server, serving, url = await start_host(warm_pool, tmp_path)  # the same plan file, the same store
    try:
        assert host.plan.owner_of("data_sync") == "modern" and host.file_plan.owner_of("data_sync") == "legacy"
        assert host.modern.state.tasks.state()["data_sync"]["running"]  # the board moved it again
        assert not host.legacy.tasks.running("data_sync")
        ocr = host.plan.find("POST", "/v1/ocr")
        assert ocr is not None and (ocr.mode, ocr.percent) == ("canary", 20.0)
        async with httpx.AsyncClient(base_url=url, timeout=WAIT, headers=headers) as admin:
            assert (await admin.get("/_cutover/api/history")).json()["changes"] == before
            plan_path = tmp_path / "cutover.toml"
            plan_path.write_text(plan_path.read_text().replace('"POST /v1/ocr" = "legacy"', '"POST /v1/ocr" = "shadow"'))
            reloaded = await admin.post("/_cutover/api/reload")
            assert reloaded.status_code == 200, reloaded.text
            ocr = host.plan.find("POST", "/v1/ocr")
            assert ocr is not None and ocr.mode == "shadow"  # the file was edited since the change: the file wins
            assert host.plan.owner_of("data_sync") == "modern"  # the task's change still applies
            dropped = (await admin.get("/_cutover/api/history", params={"route": "POST /v1/ocr"})).json()["changes"][0]
            assert dropped["action"] == "dropped" and dropped["to"] == {"mode": "shadow", "percent": 0.0}
            assert "plan file changed" in dropped["why"]
    finally:
        await stop(server, serving)
