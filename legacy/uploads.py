"""Reading request bodies: raw uploads, multipart ``file`` fields and JSON."""

from __future__ import annotations

import json
from email.message import Message
from email.parser import BytesParser
from typing import Any

from twisted.internet import defer, threads
from twisted.web.server import Request

from .errors import ApiError

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif"})
AUDIO_TYPES = frozenset({"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"})
MULTIPART = "multipart/form-data"


def media_type(request: Request) -> str:
    raw = request.getHeader(b"content-type") or b""
    return raw.decode("latin-1").split(";", 1)[0].strip().lower()


def body(request: Request) -> bytes:
    request.content.seek(0)
    return request.content.read()


def _file_part(data: bytes, content_type: str) -> bytes:
    """The ``file`` field of a multipart body (blocking: parsed in a thread)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message: Message = BytesParser().parsebytes(head + data)
    if not message.is_multipart() or message.defects:
        raise ApiError(400, "malformed_multipart", "the multipart/form-data body could not be parsed")
    for part in message.get_payload():
        if part.get_param("name", header="content-disposition") == "file":
            payload = part.get_payload(decode=True)
            return payload if isinstance(payload, bytes) else b""
    raise ApiError(422, "missing_field", "the multipart body has no `file` field")


@defer.inlineCallbacks
def read_upload(request: Request, accepted: frozenset[str], what: str) -> Any:
    """The uploaded bytes, sent raw with an accepted Content-Type or as multipart ``file``."""
    kind = media_type(request)
    if kind == MULTIPART:
        data = yield threads.deferToThread(_file_part, body(request), request.getHeader(b"content-type").decode("latin-1"))
    elif kind in accepted:
        data = body(request)
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


def read_json(request: Request) -> dict[str, Any]:
    """A JSON object body, or the 400/415/422 that says why not."""
    kind = media_type(request)
    if kind != "application/json":
        raise ApiError(415, "unsupported_media_type", f"send application/json; got {kind or 'no Content-Type'}")
    raw = body(request)
    if not raw:
        raise ApiError(400, "empty_body", "the request has no JSON body")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_parameter", "the JSON body must be an object")
    return value


def query_float(request: Request, name: str, default: float) -> float:
    values = request.args.get(name.encode())
    if not values:
        return default
    text = values[0].decode("utf-8", "replace")
    try:
        number = float(text)
    except ValueError:
        raise ApiError(422, "invalid_parameter", f"query parameter `{name}` must be a number, got {text!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ApiError(422, "invalid_parameter", f"query parameter `{name}` must be finite, got {text!r}")
    return number
