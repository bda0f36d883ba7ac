"""A real Dask cluster on loopback for the dask backend's tests.

One ``distributed.LocalCluster`` per session: two worker processes (each under
its nanny, which restarts it when a test kills it), one thread each, the
scheduler in this process on 127.0.0.1 with no dashboard. The scheduler runs
with ``allowed-failures=0``, so a worker killed mid-task fails that task at
once (with the default, 3, Dask would re-run it on another worker first).
Clusters are created and closed in a thread: neither blocks the test loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import dask
import pytest
from distributed import Client, LocalCluster

from bridge import SharedPool
from bridge.testing import asyncio_fixture
from tests.conftest import WAIT, until

T = TypeVar("T")
WORKERS = 2
CLUSTER_CONFIG = {"distributed.scheduler.allowed-failures": 0}


async def eventually(check: Callable[[], Awaitable[bool]], what: str, interval: float = 0.05) -> None:
    """:func:`tests.conftest.until` for a condition that needs a round trip to ask, bounded by WAIT."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {WAIT}s waiting for {what}")
        await asyncio.sleep(interval)


def pool_url(cluster: LocalCluster) -> str:
    """The CUTOVER_POOL value for a cluster: ``dask://host:port``."""
    return "dask://" + cluster.scheduler_address.removeprefix("tcp://")


class Cluster:
    """The session's LocalCluster, its ``CUTOVER_POOL`` URL and a side client for looking at the workers."""

    def __init__(self, cluster: LocalCluster, client: Client) -> None:
        self.cluster, self.client = cluster, client
        self.url = pool_url(cluster)

    def worker_count(self) -> int:
        return sum(ws.status.name == "running" for ws in self.cluster.scheduler.workers.values())

    async def on_every_worker(self, fn: Callable[..., T], *args: Any) -> dict[str, T]:
        """``fn(*args)`` on each worker, through the side client (a thread: it blocks)."""
        return await asyncio.to_thread(self.client.run, fn, *args)

    def scheduler_keys(self, prefix: str) -> list[str]:
        return [str(key) for key in list(self.cluster.scheduler.tasks) if str(key).startswith(prefix)]


@pytest.fixture(scope="session")
@asyncio_fixture
async def dask_session() -> AsyncIterator[Cluster]:
    def start() -> Cluster:
        with dask.config.set(CLUSTER_CONFIG):
            cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None)
        return Cluster(cluster, Client(cluster.scheduler_address, set_as_default=False))

    started = await asyncio.to_thread(start)
    try:
        yield started
    finally:
        def stop() -> None:
            started.client.close()
            started.cluster.close()

        await asyncio.to_thread(stop)


@pytest.fixture
@asyncio_fixture
async def dask_cluster(dask_session: Cluster) -> Cluster:
    """The session cluster with all its workers up (a test before may have killed one)."""
    await until(lambda: dask_session.worker_count() == WORKERS, f"{WORKERS} Dask workers")
    return dask_session


@pytest.fixture
@asyncio_fixture
async def dask_pool(dask_cluster: Cluster) -> AsyncIterator[SharedPool]:
    async with SharedPool(cpus=2, max_queued=8, backend=dask_cluster.url) as pool:
        yield pool
