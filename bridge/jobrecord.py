"""A durable job as every store keeps it: the record, its statuses, its errors, its JSON.

Written once for both engines (:mod:`bridge.jobstore` on SQLite,
:mod:`bridge.jobstore_pg` on PostgreSQL), so a job polled through either one
has the same shape, the same times and the same page cursors.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "FINAL_STATUSES",
    "MAX_LIST_LIMIT",
    "RECORD_COLUMNS",
    "STATUSES",
    "JobRecord",
    "SubmitListeners",
    "attempts_text",
    "decode_cursor",
    "dumps_json",
    "encode_cursor",
    "iso_time",
    "list_filters",
    "reclaim_decision",
    "started_flag",
    "validate_submit",
]

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
MAX_LIST_LIMIT = 500
#: The columns every store selects for a record, in this order.
RECORD_COLUMNS = ("id, kind, status, attempts, created_at, started_at, finished_at, params, result, error,"
                  " idempotency_key, attempt_started")


def iso_time(ts: float) -> str:
    """A unix time as the ISO text stored and served (UTC, milliseconds): it sorts as it reads."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def attempts_text(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


def dumps_json(value: Any) -> str:
    """Strict JSON (no NaN): what goes in is what any client can read back."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def started_flag(row: Mapping[str, Any]) -> bool | None:
    """The row's ``attempt_started`` as a bool, None when unknown (a row older than the column)."""
    value = row["attempt_started"]
    return None if value is None else bool(value)


@dataclass(frozen=True)
class JobRecord:
    """One job as stored, without its payload (load that with the store's ``payload``).

    ``started_at`` is the start of the latest attempt (its claim); ``attempts``
    counts the attempts charged against the kind's ``max_attempts`` (one
    interrupted by :meth:`JobRunner.stop <bridge.jobs.JobRunner.stop>`, or
    whose runner died before its call reached a worker, is refunded).
    ``attempt_started`` says whether the latest attempt's call began on a
    worker (None: unknown, a row older than that record); it is not part of
    the job's JSON.
    """

    id: str
    kind: str
    status: str
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    params: dict[str, Any]
    result: Any
    error: dict[str, str] | None
    idempotency_key: str | None
    attempt_started: bool | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    def as_json(self) -> dict[str, Any]:
        """The job as JSON for an HTTP answer: id, kind, status, attempts, times, then result or error."""
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

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> JobRecord:
        """A record from a row of :data:`RECORD_COLUMNS` (JSON columns still as text), from either engine."""
        return cls(
            id=row["id"],
            kind=row["kind"],
            status=row["status"],
            attempts=row["attempts"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            params=json.loads(row["params"]),
            result=None if row["result"] is None else json.loads(row["result"]),
            error=None if row["error"] is None else json.loads(row["error"]),
            idempotency_key=row["idempotency_key"],
            attempt_started=started_flag(row),
        )


def encode_cursor(record: JobRecord) -> str:
    raw = json.dumps([record.created_at, record.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """``(created_at, id)`` from a page cursor; ValueError, saying what to pass, on anything else."""
    if not isinstance(cursor, str):
        raise ValueError(f"invalid cursor {cursor!r}: pass back the next_cursor of a previous page")
    try:
        created_at, job_id = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        if not (isinstance(created_at, str) and isinstance(job_id, str)):
            raise ValueError("wrong types")
        datetime.fromisoformat(created_at)
    except (ValueError, TypeError, UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError(f"invalid cursor {cursor!r}: pass back the next_cursor of a previous page") from exc
    return created_at, job_id


def validate_submit(kind: Any, payload: Any, params: Any) -> str:
    """Check a submit's arguments before anything is written; returns the params as JSON text."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"kind must be a non-empty string, got {kind!r}")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict, got {type(params).__name__}")
    return dumps_json(params)  # TypeError / ValueError for what JSON cannot hold


def list_filters(status: str | None, limit: int) -> None:
    """Check a list call's filters: ValueError saying what is allowed."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"invalid status {status!r}: use one of {', '.join(STATUSES)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"invalid limit {limit!r}: use an integer from 1 to {MAX_LIST_LIMIT}")


def reclaim_decision(row: Mapping[str, Any], limit: int | None) -> str:
    """What a dead runner's job becomes: ``requeue`` (refunded), ``fail`` or ``retry`` (charged).

    A job whose call had started on a worker is charged the dead attempt: one
    that kills its whole runner must not be retried forever, so at its kind's
    ``max_attempts`` it fails with ``worker_crashed``. A job whose call had not
    started could not have killed anything: it is queued again with the
    attempt refunded. A row from before ``attempt_started`` existed is charged.
    """
    if started_flag(row) is False:
        return "requeue"
    if limit is not None and row["attempts"] >= limit:
        return "fail"
    return "retry"



class SubmitListeners:
    """The callbacks a store calls, on the loop, with each job once its submit has committed."""

    def __init__(self, first: Callable[[JobRecord], object] | None = None) -> None:
        self._callbacks: list[Callable[[JobRecord], object]] = [first] if first else []

    def subscribe(self, callback: Callable[[JobRecord], object]) -> Callable[[], None]:
        """Add ``callback``; returns the function that removes it."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    def tell(self, record: JobRecord) -> None:
        for callback in list(self._callbacks):
            try:
                callback(record)
            except Exception:  # the job is committed: a listener's bug must not fail the submit
                logging.getLogger(__name__).exception("an on_submit listener failed for job %s", record.id)
