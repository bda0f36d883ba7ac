"""Reading request bodies, as legacy does: raw uploads, multipart ``file`` fields and JSON objects."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from .errors import ApiError

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif"})
AUDIO_TYPES = frozenset({"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"})
MULTIPART = "multipart/form-data"
BIG_JSON = 64 * 1024


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _file_part(request: Request) -> bytes:
    try:
        form = await request.form()
    except HTTPException:  # Starlette's answer to a body python-multipart cannot parse
        raise ApiError(400, "malformed_multipart", "the multipart/form-data body could not be parsed") from None
    try:
        if not form:  # RFC 2046 needs at least one part; legacy's parser refuses none, and so do we
            raise ApiError(400, "malformed_multipart", "the multipart/form-data body has no parts")
        value = form.get("file")
        if value is None:
            raise ApiError(422, "missing_field", "the multipart body has no `file` field")
        if isinstance(value, UploadFile):
            return await value.read()
        return value.encode()
    finally:
        await form.close()


async def read_upload(request: Request, accepted: frozenset[str], what: str) -> bytes:
    """The uploaded bytes, sent raw with an accepted Content-Type or as multipart ``file``."""
    kind = media_type(request)
    if kind == MULTIPART:
        data = await _file_part(request)
    elif kind in accepted:
        data = await request.body()
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send {what} as one of {', '.join(sorted(accepted))} or as multipart/form-data `file`; "
            f"got {kind or 'no Content-Type'}",
        )
    if not data:
        raise ApiError(400, "empty_body", f"the request has no {what}")
    return data


async def read_json(request: Request) -> dict[str, Any]:
    """A JSON object body, or the 400/415/422 that says why not."""
    kind = media_type(request)
    if kind != "application/json":
        raise ApiError(415, "unsupported_media_type", f"send application/json; got {kind or 'no Content-Type'}")
    raw = await request.body()
    if not raw:
        raise ApiError(400, "empty_body", "the request has no JSON body")
    try:
        # Parsing megabytes of JSON takes long enough to stall the loop: do it in a thread.
        value = json.loads(raw) if len(raw) < BIG_JSON else await request.app.state.pool.run_in_thread(json.loads, raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_parameter", "the JSON body must be an object")
    return value
