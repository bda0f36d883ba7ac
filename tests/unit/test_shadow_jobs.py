"""ShadowJobs: mirrored job submissions in a database of their own, run or only validated, purged after a retention."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bridge import JobStore, SharedPool
from bridge.jobs import ShadowJobs, shadow_path
from bridge.shadowing import EXTENSION, ShadowMarker, mark, shadow_of
from bridge.testing import asyncio_test
from tests.conftest import until
from tests.unit.test_jobs import on_pool, policies

RUN = ShadowMarker("POST /v1/jobs", "run")
VALIDATE = ShadowMarker("POST /v1/jobs", "validate")


def test_the_marker_travels_in_a_scope_extension() -> None:
    scope = {"type": "http", "path": "/v1/jobs", "extensions": {"http.response.trailers": {}}}
    marked = mark(scope, VALIDATE)
    assert shadow_of(marked) == VALIDATE and not shadow_of(marked).run  # type: ignore[union-attr]
    assert marked["extensions"]["http.response.trailers"] == {} and EXTENSION not in scope["extensions"]
    assert shadow_of(scope) is None and shadow_of({"type": "http"}) is None
    assert shadow_of({"extensions": {EXTENSION: {"route": "x", "write": "bogus"}}}) == ShadowMarker("x", "run")
    assert shadow_path("var/cutover.db") == Path("var/cutover.shadow.db")


@asyncio_test
async def test_shadow_jobs_run_apart_and_are_purged(warm_pool: SharedPool, tmp_path: Path) -> None:
    real_path = tmp_path / "cutover.db"
    async with JobStore(real_path) as real:
        kept, _ = await real.submit("echo", b"real", {}, idempotency_key="k")
        shadow = ShadowJobs(real_path, on_pool(warm_pool), policies=policies(), retention=3600, purge_every=3600)
        assert not shadow.path.exists()  # nothing opened before the first shadow job
        try:
            ran, created = await shadow.submit("echo", b"shadow", {}, idempotency_key="k", marker=RUN)
            assert created and ran.id != kept.id  # the same key, another namespace: not a replay
            held, _ = await shadow.submit("echo", b"held", {}, idempotency_key=None, marker=VALIDATE)
            await until(lambda: shadow.runner is not None and shadow.runner.state()["completed"] == 1, "the shadow job")
            assert (await shadow.store.get(ran.id)).status == "succeeded"  # type: ignore[union-attr]
            assert (await shadow.store.get(held.id)).status == "queued"  # type: ignore[union-attr]  # never claimed
            assert await shadow.purge() == 0  # within the retention
            shadow.retention = 1e-9
            assert await shadow.purge() == 2 and await shadow.store.get(ran.id) is None
            with sqlite3.connect(shadow.path) as conn:
                assert conn.execute("SELECT COUNT(*) FROM job_events").fetchone() == (0,)
        finally:
            await shadow.stop()
            await shadow.stop()
        # the real store saw none of it
        assert [r.id for r in (await real.list())[0]] == [kept.id]
        assert [e["event"] for e in await real.events(kept.id)] == ["submitted"]
