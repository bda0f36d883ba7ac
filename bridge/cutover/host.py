"""``cutover serve``: both stacks in one process, on one loop, behind one front door.

Start-up, in order: Twisted's asyncio reactor is installed on uvicorn's loop;
the shared pool starts (sized to the CPU budget, models loaded once per
worker); the legacy service is built on that pool (its twisted.web Site is
served in process, no socket); the modern app is built on the same pool and
its lifespan entered; the plan decides which stack owns each background task.

Shutdown (Ctrl-C or SIGTERM), in order: uvicorn stops accepting and lets
in-flight requests finish within ``graceful_timeout``; shadow comparisons
drain; both stacks stop their tasks (modern puts in-flight jobs back in the
queue); the pool closes; the reactor stops. SIGHUP reloads the plan.

Admission: the pool bounds the calls it queues, but callers past that bound
wait in memory, each holding its request (a body of up to 20 MiB), so a
burst would grow without limit. The host therefore serves at most
``max_inflight`` requests at once (default: four times the pool's capacity,
``processes + max_queued``, and never under 64) and answers the rest at once
with 503 ``busy`` and ``Retry-After``, the contract's answer when the pool is
full. The admin API (``/_cutover``) is never refused: an operator must be able
to look at an overloaded host.

The apps are found by import strings (``[apps]`` in the plan file), so the
host works for any pair that follows the protocol of :class:`LegacyHandle`
and a FastAPI/Starlette app factory; ours are the defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..asgi import DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, Receive, Scope, Send, h11_protocol
from ..deferreds import as_future
from ..parity.diff import DiffRules
from ..pool import SharedPool, set_pool
from ..reactor import install_reactor, stop_reactor
from .admin import admin_app
from .frontdoor import ADMIN_PREFIX, FrontDoor, route_label
from .metrics import LoopLagProbe, Metrics
from .plan import Plan, PlanError
from .shadow import ShadowRecorder
from .twisted_asgi import TwistedSiteApp

log = logging.getLogger("cutover.host")
LAG_WINDOW = 60.0  # seconds of loop-lag samples the probe keeps
MIN_INFLIGHT = 64  # the admission floor: a small pool must not refuse a handful of cheap requests

DEFAULT_APPS = {
    "legacy": "legacy.service:cohost",
    "modern": "modern.app:cohost",
    "pool_initializer": "workloads:warm_up",
}


#: How shadow mode compares each route's answers (``bridge.parity.DiffRules``). Ids, times and
#: counters that are meant to differ between two stacks are ignored; everything else must match.
DIFF_RULES = {
    "GET /status": DiffRules(ignore=("service", "version", "uptime_s", "pool", "tasks", "jobs")),
    **{
        route: DiffRules(ignore=("job_id", "status", "attempts", "created_at", "started_at", "finished_at"))
        for route in ("POST /v1/jobs", "GET /v1/jobs/{job_id}", "DELETE /v1/jobs/{job_id}")
    },
}


class LegacyHandle(Protocol):
    """What the host needs from the legacy stack."""

    site: Any

    def start_tasks(self) -> None: ...
    def set_task_owner(self, name: str, stack: str) -> None: ...
    def stop(self) -> Any: ...  # a Deferred


def load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass
class HostSettings:
    plan_path: Path = Path("cutover.toml")
    host: str = "127.0.0.1"
    port: int = 8000
    var_dir: Path = field(default_factory=lambda: Path(os.environ.get("CUTOVER_VAR", "var")))
    admin_token: str | None = field(default_factory=lambda: os.environ.get("CUTOVER_ADMIN_TOKEN") or None)
    graceful_timeout: float = 10.0
    shadow_max_inflight: int = 8
    processes: int | None = None
    #: Requests served at once; past it, 503 busy with Retry-After. None: 4 x the pool's capacity, at least 64.
    max_inflight: int | None = None
    #: The loop-lag probe's sleep; it keeps a minute of samples. Finer is more exact, and costs a wake-up each time.
    lag_interval: float = field(default_factory=lambda: float(os.environ.get("CUTOVER_LAG_INTERVAL", "0.25")))
    #: Seconds a client may take to send a request body (extended as bytes arrive); past it, 408.
    body_timeout: float = field(default_factory=lambda: _env_seconds("CUTOVER_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT))
    #: Seconds a connection may take to send a complete request head; past it, 408 and closed.
    header_timeout: float = field(default_factory=lambda: _env_seconds("CUTOVER_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT))


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
    if not value > 0:
        raise ValueError(f"{name}={raw!r} must be more than 0 seconds")
    return value


class Host:
    """Owns the shared pieces: pool, plan, both stacks, shadow recorder, metrics."""

    def __init__(self, settings: HostSettings, *, pool: SharedPool | None = None) -> None:
        self.settings = settings
        self._given_pool = pool
        self.pool: SharedPool | None = pool
        # Checked for syntax now, and against the routes and tasks the apps declare once they are up.
        self.plan = Plan.load(settings.plan_path)
        self.apps = {**DEFAULT_APPS, **self.plan.apps}
        self.lag = LoopLagProbe(settings.lag_interval, keep=max(1, round(LAG_WINDOW / settings.lag_interval)))
        self.recorder = ShadowRecorder(
            settings.var_dir / "cutover.db", max_inflight=settings.shadow_max_inflight, rules=dict(DIFF_RULES)
        )
        self.metrics_ = Metrics(self._pool_stats, self.recorder.stats, self.lag, admission=self._admission)
        self.legacy: Any = None
        self.modern: Any = None
        self.frontdoor: FrontDoor | None = None
        self._modern_lifespan: contextlib.AbstractAsyncContextManager[Any] | None = None
        self._owns_reactor = False
        self.inflight = 0  # requests the front door is serving now (the admin API excluded)
        if settings.max_inflight is not None and settings.max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1 (or None for the default), got {settings.max_inflight}")
        self.max_inflight = settings.max_inflight or MIN_INFLIGHT
        self.rejected = 0  # requests answered 503 busy by the admission limit

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        existing = sys.modules.get("twisted.internet.reactor")
        # A reactor someone else already runs on this loop (pytest-twisted, an embedding app) is theirs to stop.
        self._owns_reactor = existing is None or not existing.running
        install_reactor()
        if self.pool is None:
            initializer = load(self.apps["pool_initializer"]) if self.apps.get("pool_initializer") else None
            self.pool = SharedPool(processes=self.settings.processes, initializer=initializer)
            set_pool(self.pool)
        if not self.pool.running:
            await self.pool.start()
        if self.settings.max_inflight is None:
            self.max_inflight = max(MIN_INFLIGHT, 4 * self.pool_capacity())
        owners = dict(self.plan.tasks)
        self.legacy = load(self.apps["legacy"])(self.pool, task_owners=owners)
        self.legacy.start_tasks()
        self.modern = load(self.apps["modern"])(self.pool, task_owners=owners)
        self._modern_lifespan = self.modern.router.lifespan_context(self.modern)
        await self._modern_lifespan.__aenter__()
        await self.recorder.open()
        self.lag.start()
        self.frontdoor = FrontDoor(
            legacy=TwistedSiteApp(self.legacy.site),
            modern=self.modern,
            plan=lambda: self.plan,
            recorder=self.recorder,
            observer=self.metrics_,
            admin=admin_app(self, self.settings.admin_token),
            body_timeout=self.settings.body_timeout,
        )
        self.plan = self._parse()  # now that the apps are up, check the plan against what they serve
        log.info("cutover host ready: %d routes in the plan", len(self.plan.routes))

    async def stop(self) -> None:
        if self.frontdoor is not None:
            await self.frontdoor.drain()
        await self.lag.stop()
        if self.legacy is not None:
            await as_future(self.legacy.stop())
        if self._modern_lifespan is not None:
            await self._modern_lifespan.__aexit__(None, None, None)
        await self.recorder.close()
        if self.pool is not None and self._given_pool is None:
            await self.pool.close(timeout=self.settings.graceful_timeout)
        if self._owns_reactor:
            await stop_reactor()

    def _parse(self) -> Plan:
        path = self.settings.plan_path
        return Plan.parse(
            path.read_text(encoding="utf-8"), source=path,
            known_routes=self.known_routes(), known_tasks=self.known_tasks(),
        )

    def known_routes(self) -> list[tuple[str, str]]:
        """Routes the modern app declares: the contract both stacks serve (from its OpenAPI schema)."""
        openapi = getattr(self.modern, "openapi", None)
        if openapi is not None:
            return sorted(
                (method.upper(), path) for path, operations in openapi()["paths"].items() for method in operations
            )
        return sorted(
            (method, route.path)
            for route in getattr(self.modern, "routes", [])
            for method in getattr(route, "methods", None) or ()
            if method != "HEAD" and hasattr(route, "path")
        )

    def known_tasks(self) -> list[str]:
        return sorted(self.modern.state.tasks.state()) if self.modern is not None else []

    # ------------------------------------------------------------------ control (admin API, SIGHUP)

    async def set_mode(self, method: str, template: str, mode: str, percent: float | None) -> Plan:
        self.plan = self.plan.with_mode(method, template, mode, percent)
        log.info("route %s %s -> %s", method, template, mode if percent is None else f"{mode} {percent}%")
        return self.plan

    async def set_owner(self, task: str, owner: str) -> Plan:
        if owner not in ("legacy", "modern"):
            raise PlanError(f"task owner must be legacy or modern, got {owner!r}")
        if task not in self.known_tasks():
            raise PlanError(f"unknown task {task!r} (known: {', '.join(self.known_tasks())})")
        # Stop the old owner first, then start the new one: never both at once.
        if owner == "legacy":
            await self.modern.state.tasks.set_owner(task, owner)
            self.legacy.set_task_owner(task, owner)
        else:
            self.legacy.set_task_owner(task, owner)
            await self.modern.state.tasks.set_owner(task, owner)
        self.plan = self.plan.with_owner(task, owner)
        return self.plan

    async def reload(self) -> Plan:
        fresh = self._parse()
        for task in self.known_tasks():
            if self.plan.owner_of(task) != fresh.owner_of(task):
                await self.set_owner(task, fresh.owner_of(task))
        self.plan = fresh
        log.info("plan reloaded from %s", self.settings.plan_path)
        return fresh

    def overview(self) -> dict[str, Any]:
        shadow = self.recorder.stats()
        routes = []
        for route in self.plan.routes:
            label = route_label(route)
            nxt = route.next_mode() if route.mode != "modern" else None
            routes.append({
                "method": route.method,
                "template": route.template,
                "mode": route.mode,
                "percent": route.percent,
                "shadow_safe": route.shadow_safe,
                "traffic": self.metrics_.split.get(label, {"legacy": 0, "modern": 0}),
                "shadow": shadow.get(label, {"compared": 0, "equal": 0, "different": 0, "skipped": 0,
                                             "not_mirrored": 0, "errors": 0, "mismatch_rate": 0.0}),
                "next": None if nxt is None else {"mode": nxt[0], "percent": nxt[1]},
            })
        return {
            "plan": str(self.plan.source) if self.plan.source else None,
            "routes": routes,
            "tasks": {name: self.plan.owner_of(name) for name in self.known_tasks()},
            "pool": self._pool_stats(),
            "loop_lag": self.lag.percentiles(),
            "admission": self._admission(),
        }

    def _admission(self) -> dict[str, int]:
        return {"inflight": self.inflight, "max_inflight": self.max_inflight, "rejected": self.rejected,
                "pool_capacity": self.pool_capacity()}

    def pool_capacity(self) -> int:
        """Calls the pool holds before callers wait: its workers plus its bounded queue."""
        if self.pool is None:
            return 0
        return self.pool.processes + self.pool.max_queued

    async def mismatches(self, route: str | None, limit: int) -> list[dict[str, Any]]:
        return await self.recorder.mismatches(route, limit)

    async def mismatch(self, mismatch_id: int) -> dict[str, Any] | None:
        return await self.recorder.mismatch(mismatch_id)

    def metrics(self) -> bytes:
        return self.metrics_.render()

    def _pool_stats(self) -> dict[str, Any]:
        return self.pool.stats().as_dict() if self.pool is not None and self.pool.running else {}

    # ------------------------------------------------------------------ ASGI

    def asgi(self) -> Callable[[Scope, Receive, Send], Any]:
        """The ASGI app uvicorn serves: lifespan runs start/stop, HTTP goes through the front door."""

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "lifespan":
                await _lifespan(self, receive, send)
                return
            assert self.frontdoor is not None, "the host has not started"
            path = scope.get("path", "")
            if scope["type"] != "http" or path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
                await self.frontdoor(scope, receive, send)
                return
            if self.inflight >= self.max_inflight:
                self.rejected += 1
                await _busy(send, self.max_inflight)
                return
            self.inflight += 1
            try:
                await self.frontdoor(scope, receive, send)
            finally:
                self.inflight -= 1

        return app


async def _busy(send: Send, limit: int) -> None:
    """The contract's 503: answered before the body is read, so a refused request costs next to nothing."""
    body = json.dumps({"error": {"code": "busy", "message": (
        f"the service is serving {limit} requests, its limit; retry later"
    )}}).encode()
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"retry-after", b"1"),
        (b"connection", b"close"),  # the body was never read: the connection cannot carry another request
        (b"x-served-by", b"cutover"),  # neither stack saw it: the front door refused it
    ]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(host: Host, receive: Receive, send: Send) -> None:
    message = await receive()
    assert message["type"] == "lifespan.startup"
    try:
        await host.start()
    except Exception as exc:
        log.exception("cutover host failed to start")
        await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
        return
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_reload(host)))
    await send({"type": "lifespan.startup.complete"})
    message = await receive()
    assert message["type"] == "lifespan.shutdown"
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.remove_signal_handler(signal.SIGHUP)
    try:
        await host.stop()
    except Exception as exc:
        log.exception("cutover host failed to stop cleanly")
        await send({"type": "lifespan.shutdown.failed", "message": f"{type(exc).__name__}: {exc}"})
        return
    await send({"type": "lifespan.shutdown.complete"})


async def _reload(host: Host) -> None:
    try:
        await host.reload()
    except Exception:
        log.exception("plan reload failed; keeping the current plan")


async def serve(settings: HostSettings) -> None:
    """Run the co-hosted service under uvicorn until SIGINT or SIGTERM."""
    import uvicorn

    host = Host(settings)
    config = uvicorn.Config(
        host.asgi(), host=settings.host, port=settings.port, lifespan="on",
        timeout_graceful_shutdown=int(settings.graceful_timeout),
        http=h11_protocol(settings.header_timeout),  # uvicorn alone never times out a slow request head
        ws="none",  # neither stack serves WebSockets, and the head deadline assumes plain HTTP
    )
    await uvicorn.Server(config).serve()


