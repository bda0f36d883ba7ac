"""The HTTP API, the FastAPI way: the same paths, bodies, status codes and errors as legacy."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from bridge import JobStore, SharedPool
from bridge.errors import JobFinished, JobNotFound
from bridge.jobs import JobRunner
from bridge.shadowing import shadow_of
from workloads.contract import KINDS, check_kind, job_from_json, required_text

from .errors import ApiError
from .models import (
    ERRORS,
    AudioResult,
    DomainsRequest,
    DomainsResult,
    FacesResult,
    Job,
    JobList,
    JobRequest,
    OcrResult,
    Status,
)
from .settings import ModernSettings
from .uploads import AUDIO_TYPES, IMAGE_TYPES, media_type, read_json, read_upload
from .work import run_kind

__version__ = "1.0.0"
router = APIRouter()

IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in sorted(IMAGE_TYPES)},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}, "required": ["file"]}
            },
        },
    }
}
AUDIO_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in sorted(AUDIO_TYPES)},
            "multipart/form-data": IMAGE_BODY["requestBody"]["content"]["multipart/form-data"],
        },
    }
}
UPLOADS = {"faces": (IMAGE_TYPES, "an image"), "ocr": (IMAGE_TYPES, "an image"), "audio": (AUDIO_TYPES, "a WAV file")}
HopMs = Annotated[float, Query(description="analysis frame hop in milliseconds (0 < hop_ms <= 1000)", allow_inf_nan=False)]
Threshold = Annotated[float, Query(description="dB above the noise floor that counts as speech (0..60)", allow_inf_nan=False)]


def pool_of(request: Request) -> SharedPool:
    return request.app.state.pool


def settings_of(request: Request) -> ModernSettings:
    return request.app.state.settings


async def jobs_of(request: Request) -> tuple[JobStore, JobRunner]:
    """The real job store and runner, or the shadow namespace's for a mirrored request (bridge.shadowing)."""
    state = request.app.state
    if shadow_of(request.scope) is None:
        return state.jobs, state.runner
    shadow = await state.shadow_jobs.ready()
    assert shadow.runner is not None
    return shadow.store, shadow.runner


@router.get("/status", response_model=Status, tags=["service"])
async def status(request: Request) -> dict[str, Any]:
    state = request.app.state
    body = {
        "service": "modern",
        "version": __version__,
        "uptime_s": round(time.monotonic() - state.started, 3),
        "pool": state.pool.stats().as_dict(),
        "tasks": state.tasks.state(),
    }
    if getattr(state, "runner", None) is not None:
        body["jobs"] = state.runner.state()
    return body


@router.post("/v1/faces", response_model=FacesResult, responses=ERRORS, openapi_extra=IMAGE_BODY, tags=["work"])
async def faces(request: Request) -> Any:
    data = await read_upload(request, IMAGE_TYPES, "an image")
    return await run_kind(pool_of(request), "faces", data, {}, settings_of(request))


@router.post("/v1/ocr", response_model=OcrResult, responses=ERRORS, openapi_extra=IMAGE_BODY, tags=["work"])
async def ocr(request: Request) -> Any:
    data = await read_upload(request, IMAGE_TYPES, "an image")
    return await run_kind(pool_of(request), "ocr", data, {}, settings_of(request))


@router.post("/v1/audio/analyze", response_model=AudioResult, responses=ERRORS, openapi_extra=AUDIO_BODY, tags=["work"])
async def analyze_audio(request: Request, hop_ms: HopMs = 10.0, threshold: Threshold = 6.0) -> Any:
    data = await read_upload(request, AUDIO_TYPES, "a WAV file")
    params = {"hop_ms": hop_ms, "threshold_db": threshold}
    return await run_kind(pool_of(request), "audio", data, params, settings_of(request))


@router.post(
    "/v1/domains",
    response_model=DomainsResult,
    responses=ERRORS,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": DomainsRequest.model_json_schema()}}}},
    tags=["work"],
)
async def domains(request: Request) -> Any:
    text = required_text(await read_json(request))
    return await run_kind(pool_of(request), "domains", text, {}, settings_of(request))


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=Job,
    responses=ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": JobRequest.model_json_schema()},
                **AUDIO_BODY["requestBody"]["content"],
                **IMAGE_BODY["requestBody"]["content"],
            },
        }
    },
    tags=["jobs"],
)
async def submit_job(
    request: Request,
    kind: Annotated[str | None, Query(description="with an upload: faces, ocr or audio")] = None,
    hop_ms: HopMs = 10.0,
    threshold: Threshold = 6.0,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    if media_type(request) == "application/json":
        job_kind, given, params = job_from_json(await read_json(request))
        # the text of a domains job is stored as bytes; JSON may carry lone surrogates
        payload = given.encode("utf-8", "surrogatepass") if isinstance(given, str) else given
    else:
        if kind is None:
            raise ApiError(422, "missing_field", f"say what to run: ?kind= one of {', '.join(KINDS)}")
        job_kind = check_kind(kind)
        if job_kind == "domains":
            raise ApiError(415, "unsupported_media_type", "submit domains jobs as application/json {kind, text}")
        params = {"hop_ms": hop_ms, "threshold_db": threshold} if job_kind == "audio" else {}
        accepted, what = UPLOADS[job_kind]
        payload = await read_upload(request, accepted, what)
    state = request.app.state
    marker = shadow_of(request.scope)
    if marker is not None:  # a mirrored copy: its own namespace and keys; run or only validated, as the plan says
        record, created = await state.shadow_jobs.submit(
            job_kind, payload, params, idempotency_key=idempotency_key, marker=marker
        )
    else:
        record, created = await state.jobs.submit(job_kind, payload, params, idempotency_key=idempotency_key)
        if created:
            state.runner.notify()
    headers = {"Location": f"/v1/jobs/{record.id}"}
    if not created:  # a retried submit: the same answer as the first time, marked as a replay
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(record.as_json(), status_code=202, headers=headers)


@router.get("/v1/jobs", response_model=JobList, responses=ERRORS, tags=["jobs"])
async def list_jobs(
    request: Request,
    status: Annotated[str | None, Query(description="queued, running, succeeded, failed or cancelled")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    try:
        store, _ = await jobs_of(request)
        records, next_cursor = await store.list(status=status, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise ApiError(422, "invalid_parameter", str(exc)) from None
    return {"jobs": [r.as_json() for r in records], "next_cursor": next_cursor}


@router.get("/v1/jobs/{job_id}", response_model=Job, responses=ERRORS, tags=["jobs"])
async def get_job(request: Request, job_id: str) -> Any:
    store, _ = await jobs_of(request)
    record = await store.get(job_id)
    if record is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return JSONResponse(record.as_json())


@router.delete("/v1/jobs/{job_id}", response_model=Job, responses=ERRORS, tags=["jobs"])
async def cancel_job(request: Request, job_id: str) -> Any:
    try:
        _, runner = await jobs_of(request)
        record = await runner.cancel(job_id)
    except JobNotFound:
        raise ApiError(404, "not_found", f"no job {job_id!r}") from None
    except JobFinished as exc:
        raise ApiError(409, "job_finished", f"job {job_id} already {exc.record.status}") from None
    return JSONResponse(record.as_json())


