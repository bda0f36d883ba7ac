"""The contract's error shape, ``{"error": {"code", "message"}}``, for every failure FastAPI can raise."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import workloads
from bridge import PoolBusy, WorkerCrashed


class ApiError(Exception):
    """An error the client caused, with the status and code the contract gives it."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "body", "path"))
        parts.append(f"`{where}`: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Map FastAPI's and the kernels' errors onto the contract, exactly as legacy answers them."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(workloads.InvalidInput)
    async def invalid_input(_: Request, exc: workloads.InvalidInput) -> JSONResponse:
        return error_response(422, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_parameter", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(404, "not_found", f"no such resource: {request.url.path}")
        if exc.status_code == 405:
            allow = ", ".join(sorted(m for m in (exc.headers or {}).get("Allow", "").split(", ") if m and m != "HEAD"))
            method = request.method
            return error_response(405, "method_not_allowed", f"{method} is not allowed here; use {allow}", {"Allow": allow})
        return error_response(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(TimeoutError)
    async def timeout(_: Request, exc: TimeoutError) -> JSONResponse:
        return error_response(504, "timeout", str(exc))

    @app.exception_handler(PoolBusy)
    async def busy(_: Request, exc: PoolBusy) -> JSONResponse:
        return error_response(503, "busy", str(exc), {"Retry-After": "1"})

    @app.exception_handler(WorkerCrashed)
    async def crashed(_: Request, exc: WorkerCrashed) -> JSONResponse:
        return error_response(500, "worker_crashed", str(exc))


