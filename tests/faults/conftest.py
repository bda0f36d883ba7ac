"""Fault tests: real pool workers, a real JobRunner on a real SQLite file, real servers.

``jobs`` gives a test its own pool (two workers), job store and runner, with
one kind per misbehaving function of :mod:`tests.faults.jobfns`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bridge import JobRecord, JobStore, SharedPool
from bridge.jobs import JobRunner, KindPolicy
from bridge.testing import asyncio_fixture
from tests.conftest import WAIT
from tests.faults import jobfns

FAST = {"backoff_initial": 0.05, "backoff_max": 0.2}  # retries come quickly: the tests wait for them

#: kind -> (function run in the worker, its policy). Timeouts of 1 s only on kinds that hang on purpose.
KINDS: dict[str, tuple[Callable[..., Any], KindPolicy]] = {
    "work": (jobfns.work, KindPolicy(timeout=60.0)),
    "killed_retried": (jobfns.block_until_killed, KindPolicy(timeout=60.0, max_attempts=2, **FAST)),
    "killed_once": (jobfns.block_until_killed, KindPolicy(timeout=60.0, max_attempts=1)),
    "oom": (jobfns.exhaust_memory, KindPolicy(timeout=60.0, max_attempts=2, **FAST)),
    "hang_retried": (jobfns.hang, KindPolicy(timeout=1.0, max_attempts=2, retry_on_timeout=True, **FAST)),
    "hang": (jobfns.hang, KindPolicy(timeout=1.0, max_attempts=3)),
}


class Jobs:
    """A runner of the kinds above; ``settled`` waits for final statuses, bounded by WAIT."""

    def __init__(self, pool: SharedPool, store: JobStore, runner: JobRunner) -> None:
        self.pool, self.store, self.runner = pool, store, runner

    async def submit(self, kind: str, payload: bytes = b"job", **params: Any) -> str:
        record, created = await self.store.submit(kind, payload, params)
        assert created
        return record.id

    async def settled(self, ids: list[str]) -> dict[str, JobRecord]:
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            records = {job_id: await self.store.get(job_id) for job_id in ids}
            if all(r is not None and r.finished for r in records.values()):
                return {job_id: r for job_id, r in records.items() if r is not None}
            assert asyncio.get_running_loop().time() < deadline, {i: r and r.status for i, r in records.items()}
            await asyncio.sleep(0.02)

    async def events(self, job_id: str) -> list[str]:
        return [e["event"] for e in await self.store.events(job_id)]

    async def completions(self, ids: list[str]) -> Counter[int]:
        """How many ``succeeded`` events each job has, counted: ``{1: n}`` means n jobs completed exactly once."""
        return Counter([(await self.events(job_id)).count("succeeded") for job_id in ids])


@pytest.fixture
@asyncio_fixture
async def jobs(tmp_path: Path) -> AsyncIterator[Jobs]:
    async with SharedPool(processes=2, cpus=2, max_queued=8) as pool, JobStore(tmp_path / "jobs.db") as store:

        async def execute(record: JobRecord, payload: bytes, on_start: Callable[[], None]) -> Any:
            fn, _ = KINDS[record.kind]
            return await pool.run(fn, payload, on_start=on_start, **record.params)

        runner = JobRunner(store, execute, policies={k: p for k, (_, p) in KINDS.items()}, concurrency=2,
                           poll_interval=0.2)
        await runner.start()
        try:
            yield Jobs(pool, store, runner)
        finally:
            await runner.stop(timeout=1.0)


# The co-hosted service (uvicorn, front door, both stacks, the session's warm pool) for the shadow faults.
from tests.cutover.conftest import cohost  # noqa: E402, F401
