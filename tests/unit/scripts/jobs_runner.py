"""A job runner in a process of its own, for tests/unit/test_jobs.py:
``jobs_runner.py DB [GATE_MAX_ATTEMPTS [PROCESSES [CONCURRENCY]]]`` (defaults 3, 2, 2).

DB is a SQLite path or a ``postgresql://`` URL (tests/pg); ``CUTOVER_TEST_LEASE_TTL``
sets a PostgreSQL runner's lease.

Kinds: ``crunch`` (jobfns.crunch) and ``gate`` (jobfns.wait_at_gate). Prints
``ready <runner state as JSON>`` once started, ``done <job id>`` after each
attempt's function returned (before the runner records it), and runs until
SIGTERM, when it stops the runner and the pool cleanly. The test SIGKILLs it
mid-way to prove that a restart loses and repeats no job.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from bridge import JobRecord, SharedPool
from bridge.database import open_job_store
from bridge.jobs import JobRunner, KindPolicy
from tests.unit import jobfns

FUNCTIONS = {"crunch": jobfns.crunch, "gate": jobfns.wait_at_gate}


async def main(db: str, gate_max_attempts: int, processes: int, concurrency: int) -> None:
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    options = {"lease_ttl": float(os.environ["CUTOVER_TEST_LEASE_TTL"])} if "://" in db else {}
    async with SharedPool(processes=processes, cpus=2) as pool, open_job_store(db, **options) as store:

        async def execute(record: JobRecord, payload: bytes, on_start: Callable[[], None]) -> Any:
            result = await pool.run(FUNCTIONS[record.kind], payload, on_start=on_start, **record.params)
            print(f"done {record.id}", flush=True)
            return result

        policies = {"crunch": KindPolicy(timeout=60), "gate": KindPolicy(timeout=120, max_attempts=gate_max_attempts)}
        runner = JobRunner(store, execute, policies=policies, concurrency=concurrency, poll_interval=0.2)
        await runner.start()
        print("ready", json.dumps(runner.state()), flush=True)
        await stopping.wait()
        await runner.stop(timeout=10)
        print("stopped", json.dumps(runner.state()), flush=True)


if __name__ == "__main__":
    given = [int(arg) for arg in sys.argv[2:5]]
    gate_max_attempts, processes, concurrency = [*given, *(3, 2, 2)[len(given):]]
    asyncio.run(main(sys.argv[1], gate_max_attempts, processes, concurrency))
