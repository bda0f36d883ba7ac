"""The legacy service: its site, jobs, periodic task and lifecycle on the shared pool.

It is a Twisted ``Service`` holding a ``site``: ``[apps] legacy = "legacy.service:cohost"``
hands it to ``cutover serve``, which serves the site in process and calls
``startService``/``stopService``. Its ``LoopingCall`` is named in a
:class:`bridge.looping.LoopingTasks`, so the plan's ``[tasks]`` decides whether it runs here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer

import bridge
import workloads
from bridge import SharedPool
from bridge.looping import LoopingTasks

from .jobs import JobStore
from .request import LimitedSite
from .resources import build_tree
from .settings import LegacySettings
from .sync import DataSync

__version__ = "1.0.0"


class LegacyService(Service):
    """Everything the Twisted service owns, given a pool someone else started."""

    def __init__(self, pool: SharedPool, settings: LegacySettings | None = None) -> None:
        self.pool = pool
        self.settings = settings or LegacySettings()
        self.started = time.monotonic()
        self.jobs = JobStore(pool, self.settings)
        self.data_sync = DataSync(pool, self.settings)
        self.tasks = LoopingTasks("legacy", owners=self.settings.task_owners)
        self.tasks.add("data_sync", self.data_sync.loop, every=self.settings.sync_interval,
                       startup=self.settings.sync_enabled)
        self.site = LimitedSite(build_tree(self), self.settings.max_body_bytes)
        self.site.displayTracebacks = False
        self.port: Any = None

    def status(self) -> dict[str, Any]:
        return {
            "service": "legacy",
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "pool": self.pool.stats().as_dict(),
            "tasks": {"data_sync": {**self.data_sync.state(), **self.tasks.state()["data_sync"]}},
        }

    def listen(self, host: str | None = None, port: int | None = None) -> int:
        """Listen on TCP (port 0: any free port) and return the bound port."""
        from twisted.internet import reactor

        self.port = reactor.listenTCP(
            self.settings.port if port is None else port, self.site, interface=host or self.settings.host
        )
        return int(self.port.getHost().port)

    def startService(self) -> None:
        """Start the periodic tasks this stack owns (data_sync unless the owners say modern)."""
        super().startService()
        if self.settings.sync_enabled:
            self.data_sync.prepare()
        self.tasks.start()

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        yield self.tasks.stop()
        if self.port is not None:
            yield self.port.stopListening()

    def stop(self) -> defer.Deferred[Any]:
        """Stop the service if it runs; a Deferred either way."""
        return defer.maybeDeferred(self.stopService) if self.running else defer.succeed(None)


def cohost(pool: SharedPool) -> LegacyService:
    """The legacy stack for ``cutover serve``: built on the host's pool, its Site served in process."""
    return LegacyService(pool)


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
    service.startService()
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
