"""The per-worker memory ceiling: sized from the budget, overridable, and a call past it fails alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from skimage import data as samples

import workloads
from bridge import SharedPool
from bridge.pool.memory import FLOOR, memory_budget, parse_memory, worker_memory
from bridge.testing import asyncio_test
from tests import workfns
from tests.conftest import Gate, until
from tests.synth import encode, render
from tests.unit import poolfns


def _container(tmp_path: Path, cgroup: str, files: dict[str, str]) -> Path:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    for name, text in files.items():
        path = tmp_path / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_budget_is_the_lowest_cgroup_limit_on_the_way_up(tmp_path: Path) -> None:
    root = _container(tmp_path, "0::/svc/app\n", {
        "svc/app/memory.max": "max\n", "svc/memory.max": str(3 * 2**30), "memory.max": str(8 * 2**30)})
    assert memory_budget(root) == 3 * 2**30
    assert worker_memory(None, 2, environ={}, root=root) == int(3 * 2**30 * 0.8 / 2)
    assert worker_memory(None, 8, environ={}, root=root) == FLOOR  # never under the floor


def test_a_v1_limit_counts_and_no_limit_means_physical_memory(tmp_path: Path) -> None:
    v1 = _container(tmp_path / "v1", "4:memory:/docker/abc\n", {"memory/memory.limit_in_bytes": str(2 * 2**30)})
    assert memory_budget(v1) == 2 * 2**30
    unlimited = _container(tmp_path / "none", "4:memory:/\n", {"memory/memory.limit_in_bytes": "9223372036854771712"})
    assert memory_budget(unlimited) > 2**28  # physical memory of this machine


def test_the_setting_and_the_env_var_override_and_zero_disables() -> None:
    assert worker_memory("512M", 1, environ={"CUTOVER_WORKER_MEMORY": "1G"}) == 512 * 2**20
    assert worker_memory(None, 1, environ={"CUTOVER_WORKER_MEMORY": "1.5GiB"}) == int(1.5 * 2**30)
    assert worker_memory(None, 1, environ={"CUTOVER_WORKER_MEMORY": "0"}) is None
    assert worker_memory(None, 1, environ={"CUTOVER_WORKER_MEMORY": "none"}) is None
    assert worker_memory(0, 1) is None
    assert parse_memory(3 * 2**30) == 3 * 2**30
    with pytest.raises(ValueError, match="CUTOVER_WORKER_MEMORY: cannot read a memory size from 'lots'"):
        worker_memory(None, 1, environ={"CUTOVER_WORKER_MEMORY": "lots"})
    with pytest.raises(ValueError, match="memory size"):
        SharedPool(processes=1, cpus=1, worker_memory="12 parsecs")


@asyncio_test
async def test_a_call_past_the_ceiling_fails_alone_with_memory_error_and_its_worker_is_replaced(gate: Gate) -> None:
    async with SharedPool(processes=1, cpus=2, worker_memory="400M") as pool:
        limit = await pool.run(poolfns.memory_status)
        assert limit["rlimit_data"] == 400 * 2**20
        assert await pool.run(poolfns.allocate, 64) == 64 * 2**20  # well under the ceiling
        pid = await pool.run(workfns.getpid)
        hog = asyncio.ensure_future(pool.run(poolfns.allocate, 1024))
        behind = [asyncio.ensure_future(pool.run(workfns.getpid)) for _ in range(3)]
        with pytest.raises(MemoryError):
            await hog
        pids = set(await asyncio.gather(*behind))
        assert pid not in pids  # the worker that ran out is gone; the calls behind it ran on its replacement
        await until(lambda: pool.stats().restarts == 1, "the replacement to be counted")
        stats = pool.stats()
        assert (stats.failed, stats.crashed) == (1, 0)
        assert await pool.run(poolfns.allocate, 64) == 64 * 2**20


@asyncio_test
async def test_the_example_services_workers_load_and_run_under_a_1g_ceiling() -> None:
    """onnxruntime and OpenCV reserve far more address space than they use; the data ceiling lets them run."""
    photo = encode(samples.astronaut())
    page = render((1600, 1200), (30, 40, "HELLO WORLD"), (30, 400, "CUTOVER 2026"))
    async with SharedPool(processes=1, cpus=2, initializer=workloads.warm_up, worker_memory="1G") as pool:
        faces, text = await asyncio.gather(pool.run(workloads.detect_faces, photo), pool.run(workloads.read_text, page))
        status = await pool.run(poolfns.memory_status)
    assert faces == workloads.detect_faces(photo)
    assert [line["text"] for line in text["lines"]] == [line["text"] for line in workloads.read_text(page)["lines"]]
    assert status["rlimit_data"] == 2**30
    # reserved address space is about twice the private data: an RLIMIT_AS this size would refuse it
    assert status["VmSize"] > 1.5 * status["VmData"]
