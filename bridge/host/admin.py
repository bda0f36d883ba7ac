"""The admin API and dashboard under ``/_cutover/``.

Every API call needs an admin token (settings or ``CUTOVER_ADMIN_TOKEN``, labelled
``admin``; more in ``CUTOVER_ADMIN_TOKENS`` as ``label:token`` pairs), sent as
``Authorization: Bearer <token>`` or ``X-Cutover-Token``; it is compared in
constant time, and the token's label is who the history records a move under.
A token in the query string is refused (it would land in access logs). With
no token configured the admin API is off. Wrong tokens are rate limited per
client address (:class:`FailureLimiter`): past a burst, 429 with
``Retry-After``. The dashboard page itself is static and holds no data: its
script asks for the token and calls the API with it.

Every parameter is checked before it reaches the store: ids are integers from 1
to 2^63-1, limits have bounds, routes are "METHOD /path"; a bad one is a 422.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import time
from collections.abc import Mapping
from importlib import resources
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..asgi import BodyLimitMiddleware
from ..errors import PlanError, StoreUnavailable
from .control import GateRefused, Steering
from .export import export_toml
from .plan import Plan

#: Admin requests are a few small JSON objects; nothing bigger is read.
ADMIN_MAX_BODY = 64 * 1024
MAX_ID = 2**63 - 1  # SQLite's INTEGER: a larger id cannot exist, and would overflow the query
DEFAULT_LABEL = "admin"  # the label of CUTOVER_ADMIN_TOKEN in the history
MAX_WHY = 500  # characters of a move's reason kept


class HostControl(Protocol):
    plan: Plan
    file_plan: Plan
    steering: Steering

    def overview(self) -> dict[str, Any]: ...
    async def set_mode(self, method: str, template: str, mode: str, percent: float | None, *, who: str = ...,
                       why: str = ..., force: bool = ...) -> Plan: ...
    async def set_owner(self, task: str, owner: str, *, who: str = ..., why: str = ...) -> Plan: ...
    async def reload(self) -> Plan: ...
    async def mismatches(self, route: str | None, limit: int) -> list[dict[str, Any]]: ...
    async def mismatch(self, mismatch_id: int) -> dict[str, Any] | None: ...
    def metrics(self) -> bytes: ...
    def plan_text(self) -> str: ...
    async def fleet(self) -> dict[str, Any]: ...


class FailureLimiter:
    """A token bucket of wrong-token attempts per client address: ``burst`` at once, then ``per_second``.

    Only failures take from the bucket, so an operator with the right token is never
    slowed, but while an address's bucket is empty every attempt from it is refused
    (429), the right token included: guessing does not go on in between.
    """

    MAX_CLIENTS = 10_000  # addresses remembered; the oldest are forgotten past it

    def __init__(self, burst: int = 100, per_second: float = 1.0) -> None:
        if burst < 1 or not per_second > 0:
            raise ValueError("a failure limit needs burst >= 1 and per_second > 0")
        self.burst, self.per_second = burst, per_second
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def _level(self, client: str, now: float) -> float:
        tokens, at = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.per_second)

    def retry_after(self, client: str, now: float | None = None) -> int:
        """0 when the client may try, else whole seconds until it may."""
        now = time.monotonic() if now is None else now
        level = self._level(client, now)
        return 0 if level >= 1 else max(1, math.ceil((1 - level) / self.per_second))

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        level = self._level(client, now)
        self._buckets.pop(client, None)
        if len(self._buckets) >= self.MAX_CLIENTS:
            self._buckets.pop(next(iter(self._buckets)))
        self._buckets[client] = (max(0.0, level - 1), now)


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None,
           **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status, headers=headers)


def _authorised(request: Request, tokens: Mapping[str, str]) -> tuple[str | None, JSONResponse | None]:
    """(the token's label, None) when the request may proceed, else (None, the refusal)."""
    if not tokens:
        return None, _error(403, "admin_disabled", "the admin API is off: set CUTOVER_ADMIN_TOKEN")
    if "token" in request.query_params or "access_token" in request.query_params:
        return None, _error(400, "token_in_query", "send the token in the Authorization header, not the URL")
    given = request.headers.get("x-cutover-token", "")
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not given:
        return None, _error(401, "unauthorized", "the admin API needs the admin token")
    found = None
    for label, token in tokens.items():  # every token is compared, so the time taken says nothing of which matched
        if hmac.compare_digest(given.encode(), token.encode()):
            found = label
    if found is None:
        return None, _error(401, "unauthorized", "wrong admin token")
    return found, None


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def admin_app(host: HostControl, token: str | None, *, labels: Mapping[str, str] | None = None,
              limiter: FailureLimiter | None = None) -> Starlette:
    """The admin API of ``host``: ``token`` (labelled "admin") and ``labels`` ({label: token}) may use it."""
    tokens = {**({DEFAULT_LABEL: token} if token else {}), **(labels or {})}
    limiter = limiter or FailureLimiter()

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            client = _client(request)
            wait = limiter.retry_after(client)
            if wait and tokens:
                return _error(429, "too_many_attempts", f"too many wrong admin tokens from {client}; retry in {wait} s",
                              headers={"Retry-After": str(wait)})
            who, refusal = _authorised(request, tokens)
            if refusal is not None:
                if refusal.status_code == 401:
                    limiter.failed(client)
                return refusal
            request.state.who = who
            try:
                return await handler(request)
            except GateRefused as exc:
                return _error(409, "gate_failed", str(exc), refused=exc.as_dict())
            except PlanError as exc:
                return _error(422, "invalid_plan", str(exc))
            except LookupError as exc:
                return _error(404, "not_found", str(exc.args[0]) if exc.args else "not found")
            except StoreUnavailable as exc:  # the shared database is away: the host serves on, this asks again later
                return _error(503, "store_unavailable", str(exc), headers={"Retry-After": "5"})
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
        options = _move_options(body)
        if isinstance(options, Response):
            return options
        force, why = options
        await host.set_mode(body["method"], body["template"], body["mode"], percent, who=request.state.who, why=why,
                            force=force)
        return JSONResponse(host.overview())

    async def step(request: Request) -> Response:
        body = await _json(request)
        if isinstance(body, Response):
            return body
        route = _route_param(body.get("route"))
        if isinstance(route, Response):
            return route
        options = _move_options(body)
        if isinstance(options, Response):
            return options
        force, why = options
        if request.url.path.endswith("/promote"):
            change = await host.steering.promote(route, who=request.state.who, why=why, force=force)
        else:
            change = await host.steering.rollback(route, who=request.state.who, why=why)
        return JSONResponse({"change": None if change is None else change.as_dict(), **host.overview()})

    async def set_task(request: Request) -> Response:
        body = await _json(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body.get("task"), str) or not isinstance(body.get("owner"), str):
            return _error(422, "missing_field", "`task` and `owner` (strings) are required")
        options = _move_options(body)
        if isinstance(options, Response):
            return options
        await host.set_owner(body["task"], body["owner"], who=request.state.who, why=options[1])
        return JSONResponse(host.overview())

    async def reload(_: Request) -> Response:
        await host.reload()
        return JSONResponse(host.overview())

    async def mismatches(request: Request) -> Response:
        limit = _int_param(request, "limit", 50, 1, 500)
        if isinstance(limit, Response):
            return limit
        route = request.query_params.get("route")
        if route is not None and isinstance(checked := _route_param(route), Response):
            return checked
        return JSONResponse({"mismatches": await host.mismatches(route, limit)})

    async def mismatch(request: Request) -> Response:
        raw = request.path_params["mismatch_id"]
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_ID:
            return _error(422, "invalid_parameter", f"a mismatch id is an integer from 1 to {MAX_ID}, got {raw[:40]!r}")
        found = await host.mismatch(int(raw))
        if found is None:
            return _error(404, "not_found", "no such mismatch")
        return JSONResponse(found)

    async def evidence(request: Request) -> Response:
        route = request.query_params.get("route")
        keys = [r.key for r in host.plan.routes]
        if route is not None:
            checked = _route_param(route)
            if isinstance(checked, Response):
                return checked
            host.steering.route(checked)  # LookupError: 404
            keys = [checked]
        rows = {}
        for key in keys:
            found = host.steering.route(key)
            nxt = found.next_mode() if found.mode != "modern" else None
            rows[key] = {"evidence": host.steering.evidence.summary(key), "auto": found.auto,
                         "next": None if nxt is None else {"mode": nxt[0], "percent": nxt[1]},
                         "gate": None if nxt is None else host.steering.verdict(found, *nxt).as_dict()}
        return JSONResponse({"routes": rows})

    async def history(request: Request) -> Response:
        limit = _int_param(request, "limit", 50, 1, 500)
        if isinstance(limit, Response):
            return limit
        before = _int_param(request, "before", None, 1, MAX_ID)
        if isinstance(before, Response):
            return before
        route = request.query_params.get("route")
        if route is not None and isinstance(checked := _route_param(route), Response):
            return checked
        changes = await host.steering.store.changes(route, limit, before)
        return JSONResponse({"changes": changes, "next_before": changes[-1]["id"] if len(changes) == limit else None})

    async def series(request: Request) -> Response:
        limit = _int_param(request, "limit", 300, 1, 2000)
        if isinstance(limit, Response):
            return limit
        route = _route_param(request.query_params.get("route"))
        if isinstance(route, Response):
            return route
        host.steering.route(route)
        return JSONResponse({"route": route, "points": await host.steering.store.samples(route, limit)})

    async def fleet(_: Request) -> Response:
        return JSONResponse(await host.fleet())

    async def export(_: Request) -> Response:
        text = await asyncio.to_thread(host.plan_text)  # a file read: off the loop
        return Response(export_toml(text, host.plan), media_type="application/toml; charset=utf-8")

    async def metrics(_: Request) -> Response:
        return Response(host.metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def dashboard(_: Request) -> Response:
        page = resources.files("bridge.host").joinpath("dashboard.html").read_text(encoding="utf-8")
        return HTMLResponse(page, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                           "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                           "style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'"})

    return Starlette(
        routes=[
            Route("/_cutover/", dashboard, methods=["GET"]),
            Route("/_cutover/api", guarded(overview), methods=["GET"]),
            Route("/_cutover/api/routes", guarded(set_route), methods=["POST"]),
            Route("/_cutover/api/promote", guarded(step), methods=["POST"]),
            Route("/_cutover/api/rollback", guarded(step), methods=["POST"]),
            Route("/_cutover/api/tasks", guarded(set_task), methods=["POST"]),
            Route("/_cutover/api/reload", guarded(reload), methods=["POST"]),
            Route("/_cutover/api/evidence", guarded(evidence), methods=["GET"]),
            Route("/_cutover/api/history", guarded(history), methods=["GET"]),
            Route("/_cutover/api/series", guarded(series), methods=["GET"]),
            Route("/_cutover/api/plan/export", guarded(export), methods=["GET"]),
            Route("/_cutover/api/fleet", guarded(fleet), methods=["GET"]),
            Route("/_cutover/api/mismatches", guarded(mismatches), methods=["GET"]),
            Route("/_cutover/api/mismatches/{mismatch_id}", guarded(mismatch), methods=["GET"]),
            Route("/_cutover/metrics", guarded(metrics), methods=["GET"]),
        ],
        middleware=[Middleware(BodyLimitMiddleware, max_body_bytes=ADMIN_MAX_BODY)],
    )


def _int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int | None | Response:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        return _error(422, "invalid_parameter", f"`{name}` must be an integer from {low} to {high}, got {raw[:40]!r}")
    return int(raw)


def _route_param(raw: object) -> str | Response:
    """A route written "METHOD /path", as the plan writes it."""
    if not isinstance(raw, str) or not raw:
        return _error(422, "missing_field", '`route` ("METHOD /path", a string) is required')
    method, sep, template = raw.partition(" ")
    if not sep or not method.isascii() or not method.isupper() or not template.startswith("/") or len(raw) > 2000:
        return _error(422, "invalid_parameter", f'a route is written "METHOD /path", got {raw[:60]!r}')
    return raw


def _move_options(body: dict[str, Any]) -> tuple[bool, str] | Response:
    force, why = body.get("force", False), body.get("why", "")
    if not isinstance(force, bool):
        return _error(422, "invalid_parameter", "`force` must be true or false")
    if not isinstance(why, str) or len(why) > MAX_WHY:
        return _error(422, "invalid_parameter", f"`why` must be a string of at most {MAX_WHY} characters")
    return force, why


async def _json(request: Request) -> dict[str, Any] | Response:
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return _error(400, "malformed_json", "the body is not valid JSON")
    if not isinstance(body, dict):
        return _error(422, "invalid_parameter", "the JSON body must be an object")
    return body
