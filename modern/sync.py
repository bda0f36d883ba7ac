"""data_sync, ported from legacy's LoopingCall to a ``@task(every=...)``.

Same folders, same output, same exactly-once rules as ``legacy/sync.py`` (see
its docstring); what changed is only how it is written: ``async def``, blocking
file IO on the pool's threads, kernels on the pool's processes. A lease file in
``var/locks/`` makes sure that, even if both stacks were told to run it, only
one processes the inbox at a time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import workloads
from bridge import SharedPool
from bridge.database import fleet_lease
from bridge.errors import StoreUnavailable
from bridge.tasks import TaskLease, TaskRegistry
from workloads.inbox import MAX_ATTEMPTS, move, pending, write_atomically

from .settings import ModernSettings
from .work import run_kind

log = logging.getLogger("cutover.modern.data_sync")
class DataSync:
    """One tick processes what the inbox holds; the task manager calls it every ``sync_interval``."""

    def __init__(self, pool: SharedPool, settings: ModernSettings) -> None:
        self.pool, self.settings = pool, settings
        self.lease = TaskLease(settings.var_dir / "locks" / "data_sync.lock")
        # Several replicas on one PostgreSQL database: one of them runs it (None on SQLite).
        self.fleet = fleet_lease("data_sync", every=settings.sync_interval)
        self.attempts: dict[Path, int] = {}
        self.processed = 0

    async def tick(self) -> None:
        if self.fleet is not None and not await self._fleet_says_us():
            return
        if not self.lease.acquire():
            log.info("data_sync skipped: another process or stack holds the inbox lease")
            return
        try:
            for kind, path in await self.pool.run_in_thread(pending, self.settings.var_dir):
                try:
                    await self.process(kind, path)
                except Exception as exc:  # a crashed worker or a timeout: retry next tick, up to a limit
                    log.exception("data_sync failed on %s/%s", kind, path.name)
                    tries = self.attempts[path] = self.attempts.get(path, 0) + 1
                    if tries >= MAX_ATTEMPTS:
                        error = {"code": "gave_up", "message": f"failed {tries} times; last: {exc}"}
                        await self._fail(kind, path, error)
                        del self.attempts[path]
        finally:
            self.lease.release()

    async def _fleet_says_us(self) -> bool:
        try:
            if await self.fleet.hold():
                return True
            log.info("data_sync skipped: another replica holds the fleet lease")
        except StoreUnavailable as exc:
            log.warning("data_sync skipped: %s", exc)
        return False

    async def process(self, kind: str, path: Path) -> None:
        var = self.settings.var_dir
        output = var / "outbox" / kind / f"{path.name}.json"
        if await self.pool.run_in_thread(output.exists):  # done before a crash, not yet moved
            await self.pool.run_in_thread(move, path, var / "done" / kind)
            return
        data = await self.pool.run_in_thread(path.read_bytes)
        try:
            payload: Any = data.decode("utf-8") if kind == "domains" else data
            result = await run_kind(self.pool, kind, payload, {}, self.settings)
        except (workloads.InvalidInput, UnicodeDecodeError) as exc:
            error = exc.as_dict() if isinstance(exc, workloads.InvalidInput) else {"code": "not_utf8", "message": str(exc)}
            await self._fail(kind, path, error)
            return
        record = {"source": path.name, "kind": kind, "result": result}
        await self.pool.run_in_thread(write_atomically, output, record)
        await self.pool.run_in_thread(move, path, var / "done" / kind)
        self.processed += 1
        log.info("data_sync processed %s/%s", kind, path.name)

    async def _fail(self, kind: str, path: Path, error: dict[str, str]) -> None:
        failed = self.settings.var_dir / "failed" / kind
        await self.pool.run_in_thread(write_atomically, failed / f"{path.name}.error.json", error)
        await self.pool.run_in_thread(move, path, failed)


def register(registry: TaskRegistry, pool: SharedPool, settings: ModernSettings) -> DataSync:
    """Register data_sync on ``registry``; returns the object whose tick the task runs."""
    sync = DataSync(pool, settings)

    @registry.task(name="data_sync", every=settings.sync_interval, owner="modern", startup=settings.sync_enabled)
    async def data_sync() -> None:
        await sync.tick()

    return sync
