"""Jobs kept in memory, as legacy services do: lost on restart (durability is what modern adds)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from twisted.internet import defer
from twisted.python import log
from twisted.python.failure import Failure

from bridge import SharedPool
from workloads.contract import job_error

from .settings import LegacySettings
from .work import run_kind


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Job:
    id: str
    kind: str
    status: str = "queued"
    created_at: str = field(default_factory=now)
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 0
    result: Any = None
    error: dict[str, str] | None = None
    deferred: defer.Deferred[Any] | None = field(default=None, repr=False)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "job_id": self.id,
            "kind": self.kind,
            "status": self.status,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }
        if self.status == "succeeded":
            body["result"] = self.result
        if self.error is not None:
            body["error"] = self.error
        return body


class JobStore:
    """Jobs by id; each runs at once on the shared pool, which queues it if the workers are busy."""

    def __init__(self, pool: SharedPool, settings: LegacySettings) -> None:
        self.pool, self.settings = pool, settings
        self.jobs: dict[str, Job] = {}

    def submit(self, kind: str, payload: Any, params: dict[str, Any]) -> Job:
        job = Job(id=uuid.uuid4().hex, kind=kind)
        self.jobs[job.id] = job
        job.status, job.started_at, job.attempts = "running", now(), 1
        job.deferred = run_kind(self.pool, kind, payload, params, self.settings)
        job.deferred.addCallbacks(self._succeeded, self._failed, callbackArgs=(job,), errbackArgs=(job,))
        return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def cancel(self, job: Job) -> bool:
        """Cancel a job still queued or running; False if it had already finished."""
        if job.status not in ("queued", "running"):
            return False
        assert job.deferred is not None
        job.deferred.cancel()
        return True

    def _succeeded(self, result: Any, job: Job) -> None:
        job.status, job.result, job.finished_at = "succeeded", result, now()
        job.deferred = None

    def _failed(self, failure: Failure, job: Job) -> None:
        job.finished_at = now()
        job.deferred = None
        if failure.check(defer.CancelledError):
            job.status = "cancelled"
            job.error = {"code": "cancelled", "message": "the job was cancelled"}
            return
        job.status = "failed"
        error = job_error(failure.value)
        if error is None:
            log.err(failure, f"job {job.id} ({job.kind}) failed")
            error = {"code": "internal_error", "message": "the job failed; see the service log"}
        job.error = error
