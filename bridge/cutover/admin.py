"""The admin API and dashboard under ``/_cutover/``.

Every API call needs the admin token (settings or ``CUTOVER_ADMIN_TOKEN``),
sent as ``Authorization: Bearer <token>`` or ``X-Cutover-Token``; it is
compared in constant time. A token in the query string is refused (it would
land in access logs). With no token configured the admin API is off. The
dashboard page itself is static and holds no data: its script asks for the
token and calls the API with it.
"""

from __future__ import annotations

import hmac
from importlib import resources
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..asgi import BodyLimitMiddleware
from .plan import Plan, PlanError

#: Admin requests are a few small JSON objects; nothing bigger is read.
ADMIN_MAX_BODY = 64 * 1024
MAX_ID = 2**63 - 1  # SQLite's INTEGER: a larger id cannot exist, and would overflow the query


class HostControl(Protocol):
    plan: Plan

    def overview(self) -> dict[str, Any]: ...
    async def set_mode(self, method: str, template: str, mode: str, percent: float | None) -> Plan: ...
    async def set_owner(self, task: str, owner: str) -> Plan: ...
    async def reload(self) -> Plan: ...
    async def mismatches(self, route: str | None, limit: int) -> list[dict[str, Any]]: ...
    async def mismatch(self, mismatch_id: int) -> dict[str, Any] | None: ...
    def metrics(self) -> bytes: ...


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _authorised(request: Request, token: str | None) -> JSONResponse | None:
    """None when the request may proceed, else the refusal."""
    if not token:
        return _error(403, "admin_disabled", "the admin API is off: set CUTOVER_ADMIN_TOKEN")
    if "token" in request.query_params or "access_token" in request.query_params:
        return _error(400, "token_in_query", "send the token in the Authorization header, not the URL")
    given = request.headers.get("x-cutover-token", "")
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not given:
        return _error(401, "unauthorized", "the admin API needs the admin token")
    if not hmac.compare_digest(given.encode(), token.encode()):
        return _error(401, "unauthorized", "wrong admin token")
    return None


def admin_app(host: HostControl, token: str | None) -> Starlette:
    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            refusal = _authorised(request, token)
            if refusal is not None:
                return refusal
            try:
                return await handler(request)
            except PlanError as exc:
                return _error(422, "invalid_plan", str(exc))
        return endpoint

    async def overview(_: Request) -> Response:
        return JSONResponse(host.overview())

    async def set_route(request: Request) -> Response:
        body = await _json(request)
        if isinstance(body, Response):
            return body
        for field in ("method", "template", "mode"):
            if not isinstance(body.get(field), str):
                return _error(422, "missing_field", f"`{field}` (a string) is required")
        percent = body.get("percent")
        if percent is not None and (isinstance(percent, bool) or not isinstance(percent, (int, float))):
            return _error(422, "invalid_parameter", "`percent` must be a number")
        await host.set_mode(body["method"], body["template"], body["mode"], percent)
        return JSONResponse(host.overview())

    async def set_task(request: Request) -> Response:
        body = await _json(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body.get("task"), str) or not isinstance(body.get("owner"), str):
            return _error(422, "missing_field", "`task` and `owner` (strings) are required")
        await host.set_owner(body["task"], body["owner"])
        return JSONResponse(host.overview())

    async def reload(_: Request) -> Response:
        await host.reload()
        return JSONResponse(host.overview())

    async def mismatches(request: Request) -> Response:
        try:
            limit = int(request.query_params.get("limit", "50"))
        except ValueError:
            return _error(422, "invalid_parameter", "`limit` must be an integer")
        if not 1 <= limit <= 500:
            return _error(422, "invalid_parameter", "`limit` must be between 1 and 500")
        return JSONResponse({"mismatches": await host.mismatches(request.query_params.get("route"), limit)})

    async def mismatch(request: Request) -> Response:
        raw = request.path_params["mismatch_id"]
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_ID:
            return _error(422, "invalid_parameter", f"a mismatch id is an integer from 1 to {MAX_ID}, got {raw[:40]!r}")
        found = await host.mismatch(int(raw))
        if found is None:
            return _error(404, "not_found", "no such mismatch")
        return JSONResponse(found)

    async def metrics(_: Request) -> Response:
        return Response(host.metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def dashboard(_: Request) -> Response:
        page = resources.files("bridge.cutover").joinpath("dashboard.html").read_text(encoding="utf-8")
        return HTMLResponse(page, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})

    return Starlette(
        routes=[
            Route("/_cutover/", dashboard, methods=["GET"]),
            Route("/_cutover/api", guarded(overview), methods=["GET"]),
            Route("/_cutover/api/routes", guarded(set_route), methods=["POST"]),
            Route("/_cutover/api/tasks", guarded(set_task), methods=["POST"]),
            Route("/_cutover/api/reload", guarded(reload), methods=["POST"]),
            Route("/_cutover/api/mismatches", guarded(mismatches), methods=["GET"]),
            Route("/_cutover/api/mismatches/{mismatch_id}", guarded(mismatch), methods=["GET"]),
            Route("/_cutover/metrics", guarded(metrics), methods=["GET"]),
        ],
        middleware=[Middleware(BodyLimitMiddleware, max_body_bytes=ADMIN_MAX_BODY)],
    )


async def _json(request: Request) -> dict[str, Any] | Response:
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return _error(400, "malformed_json", "the body is not valid JSON")
    if not isinstance(body, dict):
        return _error(422, "invalid_parameter", "the JSON body must be an object")
    return body
