"""data_sync: the periodic inbox job, on a LoopingCall.

Every ``sync_interval`` seconds it takes new files from ``var/inbox/<kind>/``,
runs the kind's kernel on the shared pool, writes the result to
``var/outbox/<kind>/<name>.json`` atomically (temp file, fsync, rename) and
moves the input to ``var/done/<kind>/`` (or ``var/failed/<kind>/`` with a
``<name>.error.json``). Exactly once across restarts:

* an input whose output already exists (the process died between the two
  renames) is moved to done without running again;
* the output appears in one atomic rename, so a crash leaves no partial file;
* files are claimed one at a time in name order, and a tick never overlaps the
  next (LoopingCall waits for its Deferred).

Producers should write ``.name.tmp`` (or any dotfile) and rename into place;
dotfiles and ``*.tmp`` / ``*.part`` are never picked up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer, task, threads
from twisted.python import log
from twisted.python.failure import Failure

import workloads
from bridge import SharedPool, as_deferred
from bridge.database import fleet_lease
from bridge.errors import StoreUnavailable
from bridge.tasks import TaskLease
from workloads.inbox import MAX_ATTEMPTS, SUFFIXES, move, pending, write_atomically

from .jobs import now
from .settings import LegacySettings
from .work import run_kind


class DataSync:
    """The periodic task; ``state()`` feeds /status."""

    def __init__(self, pool: SharedPool, settings: LegacySettings) -> None:
        self.pool, self.settings = pool, settings
        self.loop = task.LoopingCall(self.tick)
        # Held for a whole tick: never two data_syncs on one inbox, whichever stack or process.
        self.lease = TaskLease(settings.var_dir / "locks" / "data_sync.lock")
        # Several replicas on one PostgreSQL database: one of them runs it (None on SQLite).
        self.fleet = fleet_lease("data_sync", every=settings.sync_interval)
        self.runs = self.failures = self.processed = 0
        self.last_run: str | None = None
        self.last_error: str | None = None
        self.attempts: dict[Path, int] = {}

    def prepare(self) -> None:
        """Create the inbox folders producers write into (once, when the service starts)."""
        for folder in (self.settings.inbox, self.settings.outbox, self.settings.done, self.settings.failed):
            for kind in SUFFIXES:
                (folder / kind).mkdir(parents=True, exist_ok=True)

    def state(self) -> dict[str, Any]:
        """Counters; who owns the task and whether it runs come from the service's LoopingTasks."""
        return {
            "runs": self.runs,
            "failures": self.failures,
            "processed": self.processed,
            "last_run": self.last_run,
            "last_error": self.last_error,
        }

    def tick(self) -> Any:
        if self.fleet is None:
            return self._local_tick()
        d = as_deferred(self.fleet.hold())  # the fleet's lease lives in PostgreSQL, reached from asyncio

        def decide(ours: bool) -> Any:
            if ours:
                return self._local_tick()
            log.msg("data_sync skipped: another replica holds the fleet lease")
            return None

        def away(failure: Failure) -> None:
            failure.trap(StoreUnavailable)
            log.msg(f"data_sync skipped: {failure.value}")

        d.addCallbacks(decide, away)
        return d

    def _local_tick(self) -> Any:
        if not self.lease.acquire():
            log.msg("data_sync skipped: another process or stack holds the inbox lease")
            return None
        d = self._tick()
        d.addBoth(lambda result: (self.lease.release(), result)[1])
        return d

    @defer.inlineCallbacks
    def _tick(self) -> Any:
        self.runs += 1
        self.last_run = now()
        try:
            files = yield threads.deferToThread(pending, self.settings.var_dir)
        except Exception as exc:  # one bad tick must not kill the LoopingCall
            self._failed(exc, "listing the inbox")
            return
        for kind, path in files:
            try:
                yield self.process(kind, path)
            except Exception as exc:  # a crashed worker or a timeout: retry next tick, up to a limit
                self._failed(exc, f"{kind}/{path.name}")
                tries = self.attempts[path] = self.attempts.get(path, 0) + 1
                if tries >= MAX_ATTEMPTS:
                    error = {"code": "gave_up", "message": f"failed {tries} times; last: {exc}"}
                    yield threads.deferToThread(
                        write_atomically, self.settings.failed / kind / f"{path.name}.error.json", error
                    )
                    yield threads.deferToThread(move, path, self.settings.failed / kind)
                    del self.attempts[path]

    def _failed(self, exc: Exception, what: str) -> None:
        self.failures += 1
        self.last_error = f"{what}: {type(exc).__name__}: {exc}"
        log.err(Failure(exc), f"data_sync failed on {what}")

    @defer.inlineCallbacks
    def process(self, kind: str, path: Path) -> Any:
        output = self.settings.outbox / kind / f"{path.name}.json"
        if output.exists():  # done before a crash, not yet moved: never run twice
            yield threads.deferToThread(move, path, self.settings.done / kind)
            return
        data = yield threads.deferToThread(path.read_bytes)
        try:
            payload: Any = data.decode("utf-8") if kind == "domains" else data
            result = yield run_kind(self.pool, kind, payload, {}, self.settings)
        except (workloads.InvalidInput, UnicodeDecodeError) as exc:
            error = exc.as_dict() if isinstance(exc, workloads.InvalidInput) else {"code": "not_utf8", "message": str(exc)}
            yield threads.deferToThread(write_atomically, self.settings.failed / kind / f"{path.name}.error.json", error)
            yield threads.deferToThread(move, path, self.settings.failed / kind)
            return
        yield threads.deferToThread(write_atomically, output, {"source": path.name, "kind": kind, "result": result})
        yield threads.deferToThread(move, path, self.settings.done / kind)
        self.processed += 1
        log.msg(f"data_sync processed {kind}/{path.name}")
