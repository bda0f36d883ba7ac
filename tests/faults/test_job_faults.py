"""Workers dying, running out of memory and hanging under real jobs: each job ends as its
KindPolicy says, the pool replaces what it lost, and the jobs beside it never notice."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from bridge.testing import asyncio_test
from tests.conftest import process_gone, until
from tests.faults.conftest import Jobs
from tests.reliability import record


async def pid_from(path: Path) -> int:
    await until(path.exists, f"a worker to announce itself in {path}")
    return int(path.read_text())


async def bystanders(jobs: Jobs, n: int = 8) -> list[str]:
    return [await jobs.submit("work", f"bystander {i}".encode()) for i in range(n)]


@asyncio_test
async def test_a_worker_sigkilled_mid_job_retries_or_fails_as_configured(jobs: Jobs, tmp_path: Path) -> None:
    retried_dir, once_dir = tmp_path / "retried", tmp_path / "once"
    retried_dir.mkdir(), once_dir.mkdir()
    before = jobs.pool.stats()
    retried = await jobs.submit("killed_retried", pid_dir=str(retried_dir), survive_after=1)
    once = await jobs.submit("killed_once", pid_dir=str(once_dir), survive_after=99)
    others = await bystanders(jobs)

    victims = [await pid_from(retried_dir / "1.pid"), await pid_from(once_dir / "1.pid")]
    for pid in victims:  # both jobs are mid-way, each on its own worker
        os.kill(pid, signal.SIGKILL)
        await process_gone(pid)
    done = await jobs.settled([retried, once, *others])

    assert done[retried].status == "succeeded" and done[retried].attempts == 2
    assert done[retried].result["pid"] not in victims
    assert await jobs.events(retried) == ["submitted", "started", "retry", "started", "succeeded"]
    assert done[once].status == "failed" and done[once].attempts == 1
    assert done[once].error is not None and done[once].error["code"] == "worker_crashed"
    assert "SIGKILL" in done[once].error["message"]
    assert await jobs.events(once) == ["submitted", "started", "failed"]
    assert all(done[i].status == "succeeded" for i in others)
    assert await jobs.completions([retried, *others]) == {1: len(others) + 1}
    await until(lambda: jobs.pool.stats().alive == 2, "the pool to replace both workers")
    after = jobs.pool.stats()
    assert after.crashed - before.crashed == 2 and after.restarts - before.restarts == 2
    ended_as_configured = (done[retried].status == "succeeded") + (done[once].error["code"] == "worker_crashed")
    record("faults", "worker SIGKILLed mid-job (retried / max_attempts=1)", 2, ended_as_configured,
           f"{len(others)}/{len(others)} bystander jobs succeeded once; {after.restarts - before.restarts} workers replaced")


@asyncio_test
async def test_a_worker_out_of_memory_fails_the_job_per_policy_and_the_pool_serves_on(jobs: Jobs) -> None:
    before = jobs.pool.stats()
    hog = await jobs.submit("oom", headroom_mb=64, want_mb=512)
    others = await bystanders(jobs)
    done = await jobs.settled([hog, *others])
    after_hog = await bystanders(jobs, 4)  # the worker that hit its limit must still be usable, or replaced
    done |= await jobs.settled(after_hog)

    assert done[hog].status == "failed" and done[hog].attempts == 2  # retried once, as the policy allows
    assert done[hog].error == {"code": "out_of_memory", "message": "the worker ran out of memory; gave up after 2 attempts"}
    assert await jobs.events(hog) == ["submitted", "started", "retry", "started", "failed"]
    assert all(done[i].status == "succeeded" for i in [*others, *after_hog])
    assert await jobs.completions([*others, *after_hog]) == {1: len(others) + len(after_hog)}
    after = jobs.pool.stats()
    deaths = after.crashed - before.crashed
    record("faults", "worker hits its memory limit (RLIMIT_AS +64 MB, asks 512 MB)", 1,
           int(done[hog].error["code"] == "out_of_memory"),
           f"MemoryError, {deaths} worker deaths; {len(others) + len(after_hog)} later jobs succeeded")


@asyncio_test
async def test_a_hung_job_times_out_per_policy_and_the_pool_recovers(jobs: Jobs) -> None:
    before = jobs.pool.stats()
    retried = await jobs.submit("hang_retried")
    others = await bystanders(jobs)
    once = await jobs.submit("hang")
    done = await jobs.settled([retried, once, *others])

    assert done[retried].status == "failed" and done[retried].attempts == 2
    assert done[retried].error == {"code": "timeout", "message": "the job did not finish within 1.0s; gave up after 2 attempts"}
    assert await jobs.events(retried) == ["submitted", "started", "retry", "started", "failed"]
    assert done[once].status == "failed" and done[once].attempts == 1  # no retry_on_timeout: failed at once
    assert done[once].error == {"code": "timeout", "message": "the job did not finish within 1.0s"}
    assert all(done[i].status == "succeeded" for i in others)
    assert await jobs.completions(others) == {1: len(others)}
    # three attempts overran: three workers killed and replaced, and the pool is whole again
    await until(lambda: jobs.pool.stats().restarts - before.restarts == 3 and jobs.pool.stats().alive == 2,
                "the pool to replace the three hung workers")
    late = await bystanders(jobs, 4)
    assert all(r.status == "succeeded" for r in (await jobs.settled(late)).values())
    timed_out = sum(done[i].error is not None and done[i].error["code"] == "timeout" for i in (retried, once))
    record("faults", "job hangs past its kind's timeout (retry_on_timeout / not)", 2, timed_out,
           f"3 workers killed and replaced; {len(others) + len(late)} bystander jobs succeeded once")
