"""Durable jobs: SQLite with one process against PostgreSQL with 1 and 3 replicas, in one run.

Each replica is a process of its own with a store and a :class:`~bridge.jobs.JobRunner`
(concurrency 4) whose jobs do no work, so the figures are the store's: claims,
settles, events, wake-ups. This process submits ``JOBS`` jobs as fast as it can
(20 at a time) and waits until all have succeeded. Throughput is jobs per second
from the first submit to the last success; latency is each job's
``finished_at - created_at``. The PostgreSQL server is a throwaway cluster
started from the installed binaries (``initdb``/``pg_ctl``), ``fsync`` off as in the tests,
so read the ratios, not the absolute figures; SQLite keeps ``synchronous = FULL``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.report import report
from bridge.database import open_job_store
from bridge.jobrecord import JobRecord
from bridge.jobs import JobRunner, KindPolicy

JOBS = 400
REPEATS = 2


async def _replica(url: str, ready: Any, stop: Any) -> None:
    async def execute(record: JobRecord, payload: bytes, on_start: Any) -> int:
        on_start()
        return len(payload)

    options = {"lease_ttl": 30.0} if url.startswith("postgresql") else {}
    async with open_job_store(url, **options) as store:
        runner = JobRunner(store, execute, policies={"noop": KindPolicy(timeout=60)}, concurrency=4,
                           poll_interval=0.5)
        await runner.start()
        ready.put(runner.id)
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await runner.stop(timeout=10)


def _replica_main(url: str, ready: Any, stop: Any) -> None:
    asyncio.run(_replica(url, ready, stop))


async def _drive(url: str) -> dict[str, float]:
    options = {"lease_ttl": 30.0} if url.startswith("postgresql") else {}
    async with open_job_store(url, **options) as store:
        began = time.perf_counter()
        ids: list[str] = []
        for start in range(0, JOBS, 20):
            batch = await asyncio.gather(*(store.submit("noop", b"x" * 64, {}) for _ in range(start, min(JOBS, start + 20))))
            ids.extend(record.id for record, _ in batch)
        while True:
            done = len((await store.list("succeeded", limit=500))[0])
            if done >= JOBS:
                break
            if time.perf_counter() - began > 600:
                raise RuntimeError(f"only {done} of {JOBS} jobs succeeded in 600 s")
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - began
        latencies = []
        for job_id in ids:
            record = await store.get(job_id)
            assert record is not None and record.finished_at is not None
            latencies.append((datetime.fromisoformat(record.finished_at)
                              - datetime.fromisoformat(record.created_at)).total_seconds() * 1000)
    latencies.sort()
    return {"jobs_per_s": JOBS / elapsed, "p50_ms": statistics.median(latencies),
            "p95_ms": latencies[int(0.95 * (len(latencies) - 1))]}


def run_config(url: str, replicas: int) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    children = [ctx.Process(target=_replica_main, args=(url, ready, stop)) for _ in range(replicas)]
    for child in children:
        child.start()
    try:
        for _ in children:
            ready.get(timeout=120)
        return asyncio.run(_drive(url))
    finally:
        stop.set()
        for child in children:
            child.join(timeout=60)
            if child.is_alive():
                child.kill()


def main() -> int:
    from tests.pgserver import PostgresServer, find_binaries

    binaries = find_binaries()
    if binaries is None:
        print("jobs_fleet: PostgreSQL's initdb/pg_ctl are not installed; skipped", file=sys.stderr)
        return 0
    server = PostgresServer.create(binaries)
    server.start()
    work = Path(tempfile.mkdtemp(prefix="cutover-bench-jobs-"))
    samples: dict[str, list[dict[str, float]]] = {}
    try:
        import psycopg

        for repeat in range(REPEATS):
            for name, replicas in (("SQLite, 1 process", 1), ("PostgreSQL, 1 replica", 1), ("PostgreSQL, 3 replicas", 3)):
                if name.startswith("SQLite"):
                    url = f"sqlite:///{work / f'{uuid.uuid4().hex}.db'}"
                else:
                    db = f"b_{uuid.uuid4().hex[:10]}"
                    with psycopg.connect(server.url, autocommit=True) as conn:
                        conn.execute(f'CREATE DATABASE "{db}"')
                    url = server.url.rsplit("/", 1)[0] + f"/{db}"
                figures = run_config(url, replicas)
                samples.setdefault(name, []).append(figures)
                print(f"  repeat {repeat + 1}: {name}: {figures['jobs_per_s']:.0f} jobs/s, "
                      f"p50 {figures['p50_ms']:.1f} ms", flush=True)
    finally:
        server.destroy()
    base = statistics.median(s["jobs_per_s"] for s in samples["SQLite, 1 process"])
    rows = []
    for name, runs in samples.items():
        throughput = statistics.median(s["jobs_per_s"] for s in runs)
        rows.append({"store": name, "jobs/s": throughput, "vs SQLite": throughput / base,
                     "p50 submit-to-done ms": statistics.median(s["p50_ms"] for s in runs),
                     "p95 ms": statistics.median(s["p95_ms"] for s in runs)})
    report("jobs_fleet", rows, notes=[
        f"{JOBS} no-op jobs per run, submitted 20 at a time by one client; runners of concurrency 4; "
        f"median of {REPEATS} alternating repeats",
        "PostgreSQL runs with fsync off (a throwaway test cluster); SQLite with synchronous = FULL",
    ], raw={"samples": samples}, title="Durable jobs: SQLite against PostgreSQL with 1 and 3 replicas")
    return 0


if __name__ == "__main__":
    sys.exit(main())
