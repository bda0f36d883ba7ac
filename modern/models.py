"""Pydantic models of the contract: they document it in the OpenAPI schema and validate what modern answers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

JobKind = Literal["faces", "ocr", "audio", "domains"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class ErrorDetail(BaseModel):
    code: str = Field(examples=["undecodable_image"])
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class FacesResult(BaseModel):
    width: int
    height: int
    faces: list[list[int]] = Field(description="[x, y, w, h] boxes, sorted by y then x")


class OcrLine(BaseModel):
    text: str
    box: list[list[float]] = Field(description="four [x, y] corners")
    score: float


class OcrResult(BaseModel):
    width: int
    height: int
    lines: list[OcrLine] = Field(description="in reading order")


class AudioResult(BaseModel):
    duration_s: float
    sample_rate: int
    channels: int
    frames: int
    speech_frames: int
    speech_ratio: float
    snr_db: float | None
    segments: list[list[float]]


class DomainsRequest(BaseModel):
    text: str


class DomainsResult(BaseModel):
    domains: list[str] = Field(description="unique, lower-case, in order of first appearance")
    count: int = Field(description="occurrences, duplicates included")


class JobRequest(BaseModel):
    """A JSON job submission; files may also be uploaded raw with ``?kind=``."""

    kind: JobKind
    text: str | None = Field(None, description="for domains")
    data_base64: str | None = Field(None, description="the file, base64-encoded, for faces, ocr and audio")
    hop_ms: float | None = None
    threshold: float | None = None


class Job(BaseModel):
    job_id: str
    kind: JobKind
    status: JobStatus
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    result: Any = None
    error: ErrorDetail | None = None


class JobList(BaseModel):
    jobs: list[Job]
    next_cursor: str | None


class Status(BaseModel):
    service: str
    version: str
    uptime_s: float
    pool: dict[str, Any]
    tasks: dict[str, Any]
    jobs: dict[str, Any] | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "malformed body (malformed_json, malformed_multipart, empty_body)",
        413: "body over the limit (body_too_large), answered before the body is read",
        415: "unsupported Content-Type",
        422: "valid shape, invalid content (missing_field, invalid_parameter, or the kernel's code)",
        500: "a worker died on this call (worker_crashed), or hit its memory ceiling (out_of_memory)",
        503: "the pool queue is full (busy), or its Dask scheduler is unreachable (pool_unavailable); see Retry-After",
        504: "the call passed its timeout (timeout)",
    }.items()
}
