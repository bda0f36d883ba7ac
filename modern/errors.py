"""The contract's error shape, ``{"error": {"code", "message"}}``, for every failure FastAPI can raise."""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import workloads
from bridge import PoolBusy, PoolUnavailable, WorkerCrashed
from bridge.errors import StoreUnavailable
from workloads.contract import INTERNAL, ApiError, answer_for

__all__ = ["ApiError", "error_response", "install_error_handlers"]
#: The exceptions the contract's table answers (``workloads.contract.answer_for``), each with its own handler.
ANSWERED = (ApiError, workloads.InvalidInput, TimeoutError, PoolBusy, PoolUnavailable, StoreUnavailable,
            WorkerCrashed, MemoryError)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = error.get("loc", ())
        if len(loc) == 2 and loc[0] == "query" and error.get("type") in ("float_parsing", "finite_number"):
            # Word it as legacy does: the contract holds the message too.
            what = "a number" if error["type"] == "float_parsing" else "finite"
            parts.append(f"query parameter `{loc[1]}` must be {what}, got {error.get('input')!r}")
            continue
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "body", "path"))
        parts.append(f"`{where}`: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "invalid request"


def _allowed_methods(request: Request) -> list[str]:
    """Every method any route of the app takes on this path (Starlette names only the first route's)."""
    app = request.app
    patterns = getattr(app.state, "_method_patterns", None)
    if patterns is None:
        patterns = []
        for template, operations in app.openapi()["paths"].items():
            regex = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            patterns.append((re.compile(f"^{regex}$"), {m.upper() for m in operations}))
        app.state._method_patterns = patterns
    methods: set[str] = set()
    for pattern, allowed in patterns:
        if pattern.match(request.url.path):
            methods |= allowed
    return sorted(methods - {"HEAD"})


def install_error_handlers(app: FastAPI) -> None:
    """Map FastAPI's and the kernels' errors onto the contract, exactly as legacy answers them."""

    async def answered(_: Request, exc: Exception) -> JSONResponse:
        found = answer_for(exc) or INTERNAL  # ANSWERED lists only what the table answers
        return error_response(found.status, found.code, found.message, dict(found.headers) or None)

    for kind in ANSWERED:
        app.add_exception_handler(kind, answered)

    @app.exception_handler(RequestValidationError)
    async def validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_parameter", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(404, "not_found", f"no such resource: {request.url.path}")
        if exc.status_code == 405:
            allow = ", ".join(_allowed_methods(request))
            method = request.method
            return error_response(405, "method_not_allowed", f"{method} is not allowed here; use {allow}", {"Allow": allow})
        return error_response(exc.status_code, "http_error", str(exc.detail))
