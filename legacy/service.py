"""The legacy service: its site, jobs, periodic task and lifecycle on the shared pool."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from typing import Any

from twisted.internet import defer

import bridge
import workloads
from bridge import SharedPool

from .jobs import JobStore
from .request import LimitedSite
from .resources import build_tree
from .settings import LegacySettings
from .sync import DataSync

__version__ = "1.0.0"


class LegacyService:
    """Everything the Twisted service owns, given a pool someone else started."""

    def __init__(self, pool: SharedPool, settings: LegacySettings | None = None) -> None:
        self.pool = pool
        self.settings = settings or LegacySettings()
        self.started = time.monotonic()
        self.jobs = JobStore(pool, self.settings)
        self.data_sync = DataSync(pool, self.settings)
        self.site = LimitedSite(build_tree(self), self.settings.max_body_bytes)
        self.site.displayTracebacks = False
        self.port: Any = None

    def status(self) -> dict[str, Any]:
        return {
            "service": "legacy",
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "pool": self.pool.stats().as_dict(),
            "tasks": {"data_sync": self.data_sync.state()},
        }

    def listen(self, host: str | None = None, port: int | None = None) -> int:
        """Listen on TCP (port 0: any free port) and return the bound port."""
        from twisted.internet import reactor

        self.port = reactor.listenTCP(
            self.settings.port if port is None else port, self.site, interface=host or self.settings.host
        )
        return int(self.port.getHost().port)

    def start_tasks(self) -> None:
        """Start the periodic tasks this stack owns (data_sync unless the owners say modern)."""
        self.set_task_owner("data_sync", self.settings.task_owners.get("data_sync", "legacy"))

    def set_task_owner(self, name: str, stack: str) -> None:
        """Give a task to a stack at runtime: legacy starts or stops its LoopingCall to match."""
        if name != "data_sync":
            raise KeyError(f"legacy has no task {name!r}")
        self.data_sync.owner = stack
        if stack == "legacy" and self.settings.sync_enabled and not self.data_sync.loop.running:
            self.data_sync.start().addErrback(lambda f: f.printTraceback())
        elif stack != "legacy":
            self.data_sync.stop()

    @defer.inlineCallbacks
    def stop(self) -> Any:
        self.data_sync.stop()
        if self.port is not None:
            yield self.port.stopListening()


def cohost(pool: SharedPool, *, task_owners: dict[str, str]) -> LegacyService:
    """The legacy stack for ``cutover serve``: built on the host's pool, its Site served in process."""
    return LegacyService(pool, LegacySettings(task_owners=task_owners))


async def serve(settings: LegacySettings | None = None, *, host: str | None = None, port: int | None = None) -> None:
    """Run the legacy service alone on this loop until SIGINT or SIGTERM."""
    settings = settings or LegacySettings()
    if host is not None or port is not None:
        settings = dataclasses.replace(settings, host=host or settings.host, port=settings.port if port is None else port)
    bridge.install_reactor()
    pool = SharedPool(initializer=workloads.warm_up)  # every model loaded once per worker
    bridge.set_pool(pool)
    await pool.start()
    service = LegacyService(pool, settings)
    port = service.listen()
    service.start_tasks()
    print(f"legacy listening on http://{settings.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await bridge.as_future(service.stop())
        await pool.close(timeout=10)
        await bridge.stop_reactor()
