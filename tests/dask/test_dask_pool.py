"""The shared pool on a real Dask cluster: same calls, same errors, the cluster's own failure modes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import workloads
from bridge import PoolBusy, PoolUnavailable, RemoteTraceback, SerializationError, SharedPool, WorkerCrashed, as_future
from bridge.errors import WorkerStartupError
from bridge.testing import asyncio_test
from tests import workfns
from tests.conftest import WAIT, Gate, until

from . import daskfns
from .conftest import Cluster, eventually

REPO = Path(__file__).resolve().parents[2]


@asyncio_test
async def test_on_start_fires_once_on_the_callers_loop_when_the_call_reaches_the_cluster(dask_pool: SharedPool) -> None:
    import threading

    loop_thread = threading.get_ident()
    starts: list[int] = []
    assert await dask_pool.run(workfns.square, 4, on_start=lambda: starts.append(threading.get_ident())) == 16
    await until(lambda: len(starts) == 1, "on_start to run on the loop")
    assert starts == [loop_thread]
    marked = threading.Event()
    assert await asyncio.wrap_future(dask_pool.submit(workfns.square, 3, on_start=marked.set)) == 9
    assert marked.is_set()


@asyncio_test
async def test_run_defer_and_submit_return_results_and_raise_with_the_remote_traceback(dask_pool: SharedPool) -> None:
    assert await dask_pool.run(workfns.add, 2, 3, scale=10) == 50
    assert await as_future(dask_pool.defer(workfns.square, 12)) == 144
    assert await asyncio.wrap_future(dask_pool.submit(workfns.square, 5)) == 25
    pids = await asyncio.gather(*(dask_pool.run(workfns.getpid) for _ in range(8)))
    assert os.getpid() not in pids  # ran in the cluster's worker processes

    with pytest.raises(LookupError, match="no such face") as caught:
        await dask_pool.run(workfns.fail_with, "no such face")
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert "fail_with" in caught.value.__cause__.tb
    with pytest.raises(LookupError, match="deferred too"):
        await as_future(dask_pool.defer(workfns.fail_with, "deferred too"))

    with pytest.raises(SerializationError, match="cannot send"):
        dask_pool.submit(lambda: 1)  # refused here, before it reaches the cluster
    with pytest.raises(SerializationError, match="cannot be pickled"):
        await dask_pool.run(workfns.return_unpicklable)

    stats = dask_pool.stats()
    assert (stats.backend, stats.health, stats.start_method) == (dask_pool.backend, "ok", "dask")
    assert stats.backend.startswith("dask://127.0.0.1:")
    assert (stats.workers, stats.alive) == (2, 2)
    assert (stats.completed, stats.failed, stats.crashed) == (11, 3, 0)


@asyncio_test
async def test_a_timeout_raises_timeout_error_and_the_pool_keeps_serving(dask_pool: SharedPool, tmp_path: Path) -> None:
    started, release, done = (str(tmp_path / name) for name in ("started", "release", "done"))
    with pytest.raises(TimeoutError, match="cannot be killed"):
        await dask_pool.run(daskfns.hold, started, release, done, timeout=0.5)  # nothing releases it before this
    assert dask_pool.stats().timeouts == 1
    Path(release).write_text("go")
    if Path(started).exists():  # it was running: not killed, it runs to completion on its worker
        await until(lambda: Path(done).exists(), "the timed-out task to finish on its worker")
    assert await asyncio.gather(*(dask_pool.run(workfns.square, i) for i in range(4))) == [0, 1, 4, 9]
    assert dask_pool.stats().timeouts == 1


@asyncio_test
async def test_a_cancelled_call_never_runs_whether_waiting_here_or_queued_on_the_cluster(
        dask_cluster: Cluster, tmp_path: Path) -> None:
    gates = [Gate(tmp_path, "a"), Gate(tmp_path, "b")]
    async with SharedPool(cpus=2, max_queued=3, backend=dask_cluster.url) as pool:
        held = [asyncio.ensure_future(pool.run(workfns.wait_at_gate, g.started, g.gate, i)) for i, g in enumerate(gates)]
        for g in gates:
            await g.wait_started()  # both workers' only threads are busy
        on_cluster = asyncio.ensure_future(pool.run(workfns.touch, str(tmp_path / "queued-ran")))
        await until(lambda: len(dask_cluster.scheduler_keys("touch-")) == 1, "the call to reach the scheduler")
        here = asyncio.ensure_future(pool.run(workfns.touch, str(tmp_path / "waiting-ran")))
        await until(lambda: pool.stats().waiting == 1, "the fourth call to wait for room in this process")
        with pytest.raises(PoolBusy):
            pool.submit(workfns.square, 2, block=False)

        on_cluster.cancel()
        here.cancel()
        for task in (on_cluster, here):
            with pytest.raises(asyncio.CancelledError):
                await task

        def forgotten() -> bool:
            return not dask_cluster.scheduler_keys("touch-")

        await until(forgotten, "the scheduler to forget the cancelled task")

        def held_by_workers(dask_worker: object) -> list[str]:
            return [str(key) for key in dask_worker.state.tasks if str(key).startswith("touch-")]  # type: ignore[attr-defined]

        async def dropped_by_workers() -> bool:
            return not any((await dask_cluster.on_every_worker(held_by_workers)).values())

        await eventually(dropped_by_workers, "the workers to drop the cancelled task before the gates open")
        for g in gates:
            await g.open()
        assert await asyncio.gather(*held) == [0, 1]
        assert await asyncio.gather(*(pool.run(workfns.square, i) for i in range(6))) == [0, 1, 4, 9, 16, 25]
        assert not (tmp_path / "queued-ran").exists()
        assert not (tmp_path / "waiting-ran").exists()
        assert pool.stats().cancelled == 2


@asyncio_test
async def test_a_worker_killed_mid_task_fails_only_its_own_call(dask_cluster: Cluster, tmp_path: Path) -> None:
    inits = tmp_path / "inits"
    inits.mkdir()
    gates = [Gate(tmp_path, "victim"), Gate(tmp_path, "survivor")]
    async with SharedPool(cpus=2, backend=dask_cluster.url, initializer=workfns.record_init,
                          initargs=(str(inits),)) as pool:
        calls = [asyncio.ensure_future(pool.run(workfns.wait_at_gate, g.started, g.gate, name))
                 for name, g in zip(("victim", "survivor"), gates, strict=True)]
        victim_pid = await gates[0].wait_started()
        survivor_pid = await gates[1].wait_started()
        assert victim_pid != survivor_pid
        os.kill(victim_pid, signal.SIGKILL)
        with pytest.raises(WorkerCrashed, match="wait_at_gate died"):
            await calls[0]
        assert not calls[1].done()
        await gates[1].open()
        assert await calls[1] == "survivor"
        assert pool.stats().crashed == 1

        await until(lambda: dask_cluster.worker_count() == 2, "the nanny to restart the killed worker")
        pids = set(await asyncio.gather(*(pool.run(workfns.getpid) for _ in range(8))))
        assert victim_pid not in pids
        started = {int(p.name.removeprefix("init-")) for p in inits.iterdir()}
        assert {victim_pid, survivor_pid} <= started  # the plugin ran the initializer on both...
        workers = await dask_cluster.on_every_worker(os.getpid)
        assert set(workers.values()) <= started  # ...and on the replacement, before its first call
        assert pool.stats().health == "ok"


@asyncio_test
async def test_the_initializer_runs_once_per_worker_even_when_two_pools_register_it(dask_cluster: Cluster) -> None:
    async with SharedPool(cpus=2, backend=dask_cluster.url, initializer=workloads.warm_up) as first:
        async with SharedPool(cpus=2, backend=dask_cluster.url, initializer=workloads.warm_up) as second:
            loads = await dask_cluster.on_every_worker(workfns.ocr_engine_loads)
            assert len(loads) == 2
            assert {count for _pid, count in loads.values()} == {1}
            image = ocr_sample()
            results = await asyncio.gather(first.run(workloads.read_text, image), second.run(workloads.read_text, image))
            assert results[0] == results[1] and results[0]["lines"]
            assert {count for _pid, count in (await dask_cluster.on_every_worker(workfns.ocr_engine_loads)).values()} == {1}
            assert await second.run(workloads.native_threads) == 1  # thread caps set by the plugin


def ocr_sample() -> bytes:
    from tests.synth import render

    return render((300, 100), (20, 30, "DASK"))


@asyncio_test
async def test_a_failing_initializer_is_reported_once_with_its_traceback(dask_cluster: Cluster) -> None:
    pool = SharedPool(cpus=2, backend=dask_cluster.url, initializer=workfns.failing_init)
    with pytest.raises(WorkerStartupError, match="model file missing"):
        await pool.start()
    assert not pool.running
    async with SharedPool(cpus=2, backend=dask_cluster.url) as healthy:  # the failed plugin is not left behind
        assert await healthy.run(workfns.square, 3) == 9


class Processes:
    """`dask scheduler` and `dask worker` as real child processes on loopback, killed at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.children = directory, []

    def start(self, module: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(REPO)}  # workers import the functions they run
        child = subprocess.Popen([sys.executable, "-m", f"distributed.cli.{module}", *args], cwd=REPO, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.children.append(child)
        return child

    async def scheduler(self, port: int = 0) -> tuple[subprocess.Popen[bytes], str]:
        """A scheduler with no workers; returns it and its address once it listens."""
        info = self.directory / f"scheduler-{len(self.children)}.json"
        child = self.start("dask_scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
                           "--scheduler-file", str(info))
        await until(lambda: info.exists() and info.stat().st_size > 0 or child.poll() is not None, "the scheduler file")
        assert child.poll() is None, "the scheduler exited"
        return child, json.loads(info.read_text())["address"]

    def close(self) -> None:
        for child in self.children:
            child.kill()
            child.wait(timeout=WAIT)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.close()


@asyncio_test
async def test_a_lost_scheduler_fails_calls_with_a_clear_error_and_the_pool_heals_when_it_returns(
        processes: Processes, tmp_path: Path) -> None:
    scheduler, address = await processes.scheduler()
    url = "dask://" + address.removeprefix("tcp://")
    inits = tmp_path / "inits"
    inits.mkdir()
    async with SharedPool(cpus=2, backend=url, startup_timeout=2, initializer=workfns.record_init,
                          initargs=(str(inits),)) as pool:
        assert pool.stats().health == "no workers"
        pending = asyncio.ensure_future(pool.run(workfns.square, 4))  # no worker: it waits on the scheduler
        await until(lambda: pool.stats().busy + pool.stats().queued == 1, "the call to be in flight")
        scheduler.kill()
        with pytest.raises(PoolUnavailable, match="unreachable"):
            await pending
        assert pool.stats().health == "scheduler unreachable"
        with pytest.raises(PoolUnavailable, match=address):
            await pool.run(workfns.square, 5)
        assert (await pool.run_in_thread(sum, [1, 2])) == 3  # threads are local and keep working

        # The scheduler comes back on the same port (empty: no plugins, no workers), then a worker joins.
        await processes.scheduler(port=int(address.rsplit(":", 1)[1]))
        await until(lambda: pool.stats().health == "no workers", "the pool to reconnect", interval=0.1)
        processes.start("dask_worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--nworkers", "1",
                        "--no-dashboard")
        await until(lambda: pool.stats().health == "ok", "the worker to join", interval=0.1)
        pid = await pool.run(workfns.getpid)
        assert (inits / f"init-{pid}").exists()  # the initializer was registered again on the new scheduler
        assert pool.stats().restarts == 1

    with pytest.raises(PoolUnavailable, match="cannot reach the Dask scheduler"):
        await SharedPool(cpus=2, backend="dask://" + free_address(), startup_timeout=1).start()


def free_address() -> str:
    """host:port of a loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def test_the_backend_setting_is_checked_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUTOVER_POOL", "dask://10.1.2.3:8786")
    assert SharedPool(cpus=2).backend == "dask://10.1.2.3:8786"
    assert SharedPool(cpus=2, backend="local").backend == "local"
    monkeypatch.delenv("CUTOVER_POOL")
    assert SharedPool(cpus=2).stats().backend == "local"
    with pytest.raises(ValueError, match="dask://host:port"):
        SharedPool(cpus=2, backend="dask:/oops")


@asyncio_test
async def test_status_of_both_stacks_shows_the_dask_backend(dask_pool: SharedPool, tmp_path: Path) -> None:
    from tests.api.conftest import ModernServer, start_legacy

    legacy, legacy_url = start_legacy(dask_pool, tmp_path / "legacy")
    modern = ModernServer(dask_pool, tmp_path / "modern")
    try:
        modern_url = await modern.start()
        async with httpx.AsyncClient(timeout=WAIT) as http:
            for url in (legacy_url, modern_url):
                answer = (await http.get(f"{url}/status")).json()
                assert answer["pool"]["backend"] == dask_pool.backend
                assert answer["pool"]["health"] == "ok"
                assert answer["pool"]["workers"] == 2
            found = await http.post(f"{modern_url}/v1/domains", json={"text": "see a.example.com"})
            assert found.json()["domains"] == ["a.example.com"]
    finally:
        await modern.stop()
        await as_future(legacy.stop())


#: The pool-backed part of "the workloads and the parity suite": test_in_pool.py is the only workloads
#: module that uses the pool (the others call the kernels in-process), and test_cli_tables.py runs
#: `cutover parity` in child processes, which doubles the run time and adds nothing pool-related.
#: All of tests/workloads and tests/parity also pass on the cluster (204 passed, 55 s), see the README.
CLUSTER_SUITE = ("tests/workloads/test_in_pool.py", "tests/parity/test_parity.py")


@pytest.mark.subprocess
@asyncio_test
async def test_the_workloads_and_parity_suites_pass_on_the_dask_cluster(dask_cluster: Cluster) -> None:
    env = {**os.environ, "CUTOVER_POOL": dask_cluster.url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", *CLUSTER_SUITE, "-q", "-p", "no:cacheprovider",
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 900)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    summary = [line for line in text.splitlines() if re.search(r"\d+ passed.* in [\d.]+s", line)]
    assert summary, text[-3000:]
    passed = int(re.search(r"(\d+) passed", summary[-1]).group(1))  # type: ignore[union-attr]
    assert passed > 20, summary[-1]
    assert not re.search(r"\d+ (failed|errors?)\b", summary[-1]), summary[-1]
    # ...and they ran on the cluster, not on a local pool: its scheduler saw the kernels' tasks
    prefixes = set(dask_cluster.cluster.scheduler.task_prefixes)
    assert {"detect_faces", "analyze_audio", "extract_domains_chunk"} <= prefixes, prefixes  # no other test sends these


@asyncio_test
async def test_both_stacks_answer_503_pool_unavailable_while_the_scheduler_is_gone(
        processes: Processes, tmp_path: Path) -> None:
    from tests.api.conftest import ModernServer, start_legacy

    scheduler, address = await processes.scheduler()
    async with SharedPool(cpus=2, backend="dask://" + address.removeprefix("tcp://"), startup_timeout=2) as pool:
        legacy, legacy_url = start_legacy(pool, tmp_path / "legacy")
        modern = ModernServer(pool, tmp_path / "modern")
        try:
            modern_url = await modern.start()
            scheduler.kill()
            await until(lambda: pool.stats().health == "scheduler unreachable", "the pool to notice", interval=0.1)
            async with httpx.AsyncClient(timeout=WAIT) as http:
                for url in (legacy_url, modern_url):
                    answer = await http.post(f"{url}/v1/domains", json={"text": "see a.example.com"})
                    assert answer.status_code == 503, (url, answer.text)
                    assert answer.headers["retry-after"] == "5"
                    assert answer.json()["error"]["code"] == "pool_unavailable"
                    status = (await http.get(f"{url}/status")).json()
                    assert status["pool"]["health"] == "scheduler unreachable"
        finally:
            await modern.stop()
            await as_future(legacy.stop())
