"""The one error shape of the HTTP API: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import json
from typing import Any

from twisted.web.server import Request

from workloads.contract import ApiError

__all__ = ["ApiError", "error_body", "write_error", "write_json"]


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def write_json(request: Request, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
    """Finish a request with a JSON body, unless the client has already gone."""
    if request.finished or request._disconnected:  # noqa: SLF001 - twisted.web has no public flag
        return
    body = json.dumps(payload).encode()
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", str(len(body)).encode())
    for name, value in (headers or {}).items():
        request.setHeader(name.encode(), value.encode())
    request.write(body)
    request.finish()


def write_error(request: Request, error: ApiError) -> None:
    write_json(request, error.status, {"error": {"code": error.code, "message": error.message}}, error.headers)
