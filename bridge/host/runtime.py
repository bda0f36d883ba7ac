"""``cutover serve``: both stacks in one process, on one loop, behind one front door.

The apps are named in the plan's ``[apps]`` by import strings (:mod:`.apps`
says what each may be). Start-up, in order: the plan's folder goes on the
path; Twisted's asyncio reactor is installed on the running loop; the plan's
task owners go on the process's :class:`~bridge.ownership.TaskBoard`; the
shared pool starts; the legacy app loads (its Site is served in process, no
socket) and its service starts; the modern app loads and its lifespan is
entered; the plan is checked against the routes and tasks they declare. Any
error on the way releases what was opened, in reverse, and is raised as one
line: :class:`HostStartError`.

Shutdown (Ctrl-C or SIGTERM), in order: uvicorn stops accepting and lets
in-flight requests finish within ``graceful_timeout``; shadow comparisons
drain; the legacy service stops; modern's lifespan exits (modern puts
in-flight jobs back in the queue); the pool closes; the reactor stops. SIGHUP
reloads the plan.

Admission: the pool bounds the calls it queues, but callers past that bound
wait in memory, each holding its request (a body of up to 20 MiB), so a
burst would grow without limit. The host therefore serves at most
``max_inflight`` requests at once (default: four times the pool's capacity,
``processes + max_queued``, and never under 64) and answers the rest at once
with 503 ``busy`` and ``Retry-After``, the contract's answer when the pool is
full. The admin API (``/_cutover``) is never refused: an operator must be able
to look at an overloaded host.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..asgi import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    BodyGuard,
    Receive,
    Scope,
    Send,
    httptools_protocol,
    request_watch,
)
from ..database import database_url
from ..errors import AppLoadError, HostStartError, PlanError, StoreUnavailable
from ..heap import freeze_startup_heap
from ..ownership import TaskBoard, use_task_board
from ..parity.diff import DiffRules
from ..pool import SharedPool, set_pool
from ..reactor import install_reactor, stop_reactor
from ..twisted_asgi import TwistedSiteApp
from .access import AccessLog
from .admin import FailureLimiter, admin_app
from .apps import LegacyApp, ModernApp, add_app_dir, import_from_string, load_legacy, load_modern
from .control import Steering
from .evidence import EvidenceBook, RouteEvidence
from .frontdoor import ADMIN_PREFIX, FrontDoor, route_label
from .history import PlanStore
from .metrics import LoopLagProbe, Metrics
from .plan import OWNERS, Plan, check_owner_declares
from .shadow import ShadowRecorder
from .shadowstore import PostgresShadowStore, ShadowStore, SqliteShadowStore

__all__ = ["Host", "HostSettings", "serve"]

log = logging.getLogger(__name__)
LAG_WINDOW = 60.0  # seconds of loop-lag samples the probe keeps
MIN_INFLIGHT = 64  # the admission floor: a small pool must not refuse a handful of cheap requests
UNROUTED_FLUSH = 5.0  # seconds between writes of the unrouted counts to the store
STACKS = OWNERS


@dataclass
class HostSettings:
    plan_path: Path = Path("cutover.toml")
    host: str = "127.0.0.1"
    port: int = 8000
    var_dir: Path = field(default_factory=lambda: Path(os.environ.get("CUTOVER_VAR", "var")))
    admin_token: str | None = field(default_factory=lambda: os.environ.get("CUTOVER_ADMIN_TOKEN") or None)
    #: More admin tokens, each with the label the history records its moves under ("alice:TOKEN,bob:TOKEN").
    admin_tokens: dict[str, str] = field(default_factory=lambda: _labelled_tokens(os.environ.get("CUTOVER_ADMIN_TOKENS")))
    #: Wrong admin tokens a client address may send at once; then one a second, and 429 past that.
    admin_failure_burst: int = field(default_factory=lambda: _env_count("CUTOVER_ADMIN_FAILURE_BURST", 100))
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
    #: The folder the apps' import strings resolve from; default ``[apps] app_dir``, else the plan's folder.
    app_dir: Path | None = None
    #: "legacy" or "modern": serve that stack alone (no front door, no admin API), as ``--only`` does.
    only: str | None = None
    #: With CUTOVER_DATABASE on PostgreSQL: how often a replica checks for changes other replicas made
    #: (LISTEN/NOTIFY wakes it sooner) and beats its row in the fleet.
    fleet_poll: float = field(default_factory=lambda: _env_seconds("CUTOVER_FLEET_POLL", 1.0))
    #: One line per request on stdout, with the stack that answered (:class:`.access.AccessLog`, in place of
    #: uvicorn's); ``--no-access-log`` or CUTOVER_ACCESS_LOG=0 turns it off.
    access_log: bool = field(default_factory=lambda: os.environ.get("CUTOVER_ACCESS_LOG", "1") != "0")


def _labelled_tokens(raw: str | None) -> dict[str, str]:
    """``CUTOVER_ADMIN_TOKENS``: "label:token" pairs, comma-separated, as {label: token}."""
    tokens: dict[str, str] = {}
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        label, sep, token = item.strip().partition(":")
        if not sep or not label or not token:
            raise ValueError(f'CUTOVER_ADMIN_TOKENS: each entry is "label:token", got {item.strip()[:20]!r}...')
        tokens[label] = token
    return tokens


def _env_count(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise ValueError(f"{name}={raw!r} must be a whole number of at least 1")
    return int(raw)


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
        if settings.only is not None and settings.only not in STACKS:
            raise ValueError(f"only must be legacy or modern, got {settings.only!r}")
        if settings.max_inflight is not None and settings.max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1 (or None for the default), got {settings.max_inflight}")
        self.settings = settings
        self._given_pool = pool
        self.pool: SharedPool | None = pool
        # Checked for syntax now, and against the routes and tasks the apps declare once they are up.
        self.plan = Plan.load(settings.plan_path)
        for stack in (settings.only,) if settings.only else STACKS:
            if stack not in self.plan.apps:
                raise HostStartError(
                    f"{settings.plan_path}: no [apps] {stack}: add an [apps] table with "
                    'legacy = "your_package.module:site" (a twisted.web Site, resource or Klein app, or a factory) and '
                    'modern = "your_package.module:app" (an ASGI app, or a factory)'
                )
        self.lag = LoopLagProbe(settings.lag_interval, keep=max(1, round(LAG_WINDOW / settings.lag_interval)))
        self.store, shadow_store = _stores(settings)
        self.recorder = ShadowRecorder(shadow_store, max_inflight=settings.shadow_max_inflight, rules=self.rules_for)
        self.metrics_ = Metrics(self._pool_stats, self.recorder.stats, self.lag, admission=self._admission)
        #: The plan as its file says it; ``plan`` is this with the run-time changes (stored) on top.
        self.file_plan = self.plan
        self.evidence = EvidenceBook(noise_floor=self._noise_floor)
        self.recorder.listeners.append(self.evidence.compared)
        self.steering = Steering(self.store, self.evidence, plan=lambda: self.plan, set_plan=self._set_plan,
                                 base=lambda: self.file_plan, registry=self.metrics_.registry)
        self.board = TaskBoard()  # this host's: two hosts in one process (tests) never share owners
        #: The legacy app as loaded (:class:`~bridge.host.apps.LegacyApp`; ``.obj`` is the team's own object).
        self.legacy_app: LegacyApp | None = None
        self.modern_app: ModernApp | None = None
        self.frontdoor: FrontDoor | None = None
        self._served: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None
        self._owns_reactor = False
        self._opened: list[Callable[[], Awaitable[None]]] = []  # undo steps, run in reverse by stop()
        self.inflight = 0  # requests the front door is serving now (the admin API excluded)
        self.max_inflight = settings.max_inflight or MIN_INFLIGHT
        self.rejected = 0  # requests answered 503 busy by the admission limit

    @property
    def legacy(self) -> Any:
        """The team's legacy object (what ``[apps] legacy`` or its factory gave)."""
        return self.legacy_app.obj if self.legacy_app is not None else None

    @property
    def modern(self) -> Any:
        """The team's modern ASGI app."""
        return self.modern_app.obj if self.modern_app is not None else None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start everything, or release what was opened and raise :class:`HostStartError`."""
        try:
            await self._start()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await self.stop()
            if isinstance(exc, HostStartError | PlanError):
                raise
            if isinstance(exc, AppLoadError):
                raise HostStartError(str(exc)) from exc
            if isinstance(exc, Exception):
                raise HostStartError(f"cutover could not start: {type(exc).__name__}: {_one_line(exc)}") from exc
            raise

    async def _start(self) -> None:
        plan, settings = self.plan, self.settings
        app_dir = settings.app_dir
        if app_dir is None:
            base = settings.plan_path.resolve().parent
            app_dir = base / plan.apps["app_dir"] if "app_dir" in plan.apps else base
        try:
            add_app_dir(app_dir)
        except AppLoadError as exc:
            raise HostStartError(f"{plan.place('app_dir')}{exc}") from None
        existing = sys.modules.get("twisted.internet.reactor")
        # A reactor someone else already runs on this loop (pytest-twisted, an embedding app) is theirs to stop.
        self._owns_reactor = existing is None or not existing.running
        install_reactor()
        if self._owns_reactor:
            self._opened.append(stop_reactor)
        use_task_board(self.board)  # the apps' task managers, started from here on, find this host's board
        self.board.set_owners(plan.tasks)
        self._opened.append(self._clear_board)
        if self.pool is None:
            initializer = None
            if plan.apps.get("pool_initializer"):
                initializer = self._import("pool_initializer")
            self.pool = SharedPool(processes=settings.processes, initializer=initializer)
            set_pool(self.pool)
        if not self.pool.running:
            await self.pool.start()
            if self._given_pool is None:
                self._opened.append(self._close_pool)
        if settings.max_inflight is None:
            self.max_inflight = max(MIN_INFLIGHT, 4 * self.pool_capacity())
        await self._load_stacks()
        if settings.only is not None:
            await self._serve_alone(settings.only)
            return
        await self.recorder.open()
        self._opened.append(self.recorder.close)
        await self.store.open()
        self._opened.append(self.store.close)
        await self.steering.restore()
        self._opened.append(self.steering.checkpoint)  # at shutdown, after the last shadow comparisons drained
        flusher = asyncio.ensure_future(self._flush_unrouted())
        self._opened.append(lambda: _cancel(flusher))
        self.lag.start()
        self._opened.append(self.lag.stop)
        assert self.legacy_app is not None and self.modern_app is not None
        self.frontdoor = FrontDoor(
            legacy=TwistedSiteApp(self.legacy_app.site),
            modern=self.modern_app,
            plan=lambda: self.plan,
            recorder=self.recorder,
            observer=_Observers(self.metrics_, self.evidence),
            admin=admin_app(self, self.settings.admin_token, labels=self.settings.admin_tokens,
                            limiter=FailureLimiter(self.settings.admin_failure_burst)),
            body_timeout=self.settings.body_timeout,
        )
        self._opened.append(self.frontdoor.drain)
        self.file_plan = self._parse()  # now that the apps are up, check the plan against what they serve
        self.plan = await self.steering.effective(self.file_plan)  # the run-time changes of earlier runs, on top
        for warning in self.plan.warnings:
            log.warning("%s", warning)
        for task in self.known_tasks():  # an owner moved at run time before a restart moves again
            if self.plan.owner_of(task) != self.file_plan.owner_of(task):
                await self.board.move(task, self.plan.owner_of(task))
        evaluator = asyncio.ensure_future(self.steering.run())
        self._opened.append(lambda: _cancel(evaluator))
        watch = getattr(self.store, "watch", None)
        if watch is not None:  # a fleet on PostgreSQL: another replica's change applies here too
            watcher = asyncio.ensure_future(watch(self.refresh, poll_interval=self.settings.fleet_poll))
            self._opened.append(lambda: _cancel(watcher))
        await self.recorder.save_inventory(self.inventory())
        log.info("cutover host ready: %d routes in the plan", len(self.plan.routes))

    async def _load_stacks(self) -> None:
        wanted = (self.settings.only,) if self.settings.only else STACKS
        if "legacy" in wanted:
            try:
                self.legacy_app = await load_legacy(self.plan.apps["legacy"], self.pool)
            except AppLoadError as exc:
                raise HostStartError(f"{self.plan.place('legacy')}{exc}") from exc
            self.legacy_app.start()
            self._opened.append(self.legacy_app.stop)
        if "modern" in wanted:
            try:
                self.modern_app = await load_modern(self.plan.apps["modern"], self.pool)
                await self.modern_app.start()
            except AppLoadError as exc:
                raise HostStartError(f"{self.plan.place('modern')}{exc}") from exc
            self._opened.append(self.modern_app.stop)

    async def _serve_alone(self, stack: str) -> None:
        """``--only``: this stack runs every task it declares, and serves every request."""
        for task, stacks in self.board.known_tasks().items():
            if stack in stacks:
                await self.board.move(task, stack)
        app: Any = TwistedSiteApp(self.legacy_app.site) if self.legacy_app is not None else self.modern_app

        async def alone(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            guard = BodyGuard(receive, send, timeout=self.settings.body_timeout, watch=request_watch(scope))
            await guard.run(app, scope)

        self._served = alone
        log.info("cutover serving %s alone", stack)

    async def stop(self) -> None:
        """Undo what :meth:`start` did, newest first; one failing step never skips the others."""
        while self._opened:
            step = self._opened.pop()
            try:
                await step()
            except Exception:
                log.exception("cutover host: %s failed while stopping", getattr(step, "__qualname__", step))

    async def _flush_unrouted(self) -> None:
        """Write the unrouted counts and the shadow summary to the store every few seconds, and once more when stopped."""
        try:
            while True:
                await asyncio.sleep(UNROUTED_FLUSH)
                await self._save_unrouted()
        finally:
            await self._save_unrouted()

    async def _save_unrouted(self) -> None:
        try:
            await self.recorder.save_unrouted(self.metrics_.unrouted_table())
            await self.recorder.save_summary()  # the comparisons since the last mismatch, for `cutover status`
        except StoreUnavailable as exc:  # kept in memory; the next flush after the store is back writes them
            log.debug("unrouted request counts not stored: %s", exc)
        except Exception:
            log.exception("could not store the unrouted request counts")

    async def _close_pool(self) -> None:
        if self.pool is not None:
            await self.pool.close(timeout=self.settings.graceful_timeout)

    async def _clear_board(self) -> None:
        self.board.clear()

    def _import(self, key: str) -> Any:
        try:
            return import_from_string(self.plan.apps[key], what=f"[apps] {key}")
        except AppLoadError as exc:
            raise HostStartError(f"{self.plan.place(key)}{exc}") from exc

    def _parse(self) -> Plan:
        path = self.settings.plan_path
        fresh = Plan.parse(
            path.read_text(encoding="utf-8"), source=path,
            known_routes=self.known_routes(), known_tasks=self.known_tasks(), modern_routes=self.modern_routes(),
            task_stacks=None if self.settings.only else self.board.known_tasks(),
        )
        if fresh.apps != self.plan.apps:
            raise PlanError("[apps] changed: restart cutover to load other apps", source=path)
        return fresh

    def modern_routes(self) -> list[tuple[str, str]] | None:
        """Routes modern serves, from its router; None when it cannot say (a bare ASGI callable)."""
        return self.modern_app.routes if self.modern_app is not None else None

    def legacy_routes(self) -> list[tuple[str, str]] | None:
        """Routes legacy declares (a Klein app's URL map); None for a resource tree."""
        return self.legacy_app.routes if self.legacy_app is not None else None

    def known_routes(self) -> list[tuple[str, str]]:
        """Routes either app declares."""
        return sorted({*(self.modern_routes() or ()), *(self.legacy_routes() or ())})

    def known_tasks(self) -> list[str]:
        return sorted(self.board.known_tasks())

    def task_owners(self) -> dict[str, str]:
        """Who runs each declared task: the plan's word, else the one stack that declares it, else legacy."""
        owners = {}
        for name, stacks in self.board.known_tasks().items():
            owners[name] = self.plan.tasks.get(name) or (stacks[0] if len(stacks) == 1 else "legacy")
        return owners

    def rules_for(self, label: str) -> DiffRules:
        """Shadow diff rules of a route label ("POST /orders"), from the current plan."""
        method, _, template = label.partition(" ")
        route = self.plan.find(method, template) if template.startswith("/") else None
        return self.plan.rules_for(route)

    # ------------------------------------------------------------------ control (admin API, SIGHUP)

    def _set_plan(self, plan: Plan) -> None:
        self.plan = plan

    async def set_mode(self, method: str, template: str, mode: str, percent: float | None, *, who: str = "admin",
                       why: str = "", force: bool = False) -> Plan:
        """Move a route, if the gates allow it (else :class:`GateRefused`) or ``force``; the move is stored."""
        await self.steering.move(method, template, mode, percent, who=who, why=why, force=force)
        return self.plan

    async def set_owner(self, task: str, owner: str, *, who: str = "admin", why: str = "") -> Plan:
        if owner not in OWNERS:
            raise PlanError(f"task owner must be legacy or modern, got {owner!r}")
        known = self.board.known_tasks()
        if task not in known:
            raise PlanError(f"unknown task {task!r} (known: {', '.join(known) or 'none'})")
        check_owner_declares(task, owner, known[task])
        before = self.plan.owner_of(task)
        await self.board.move(task, owner)
        self.plan = self.plan.with_owner(task, owner)
        if before != owner:
            await self.steering.record_owner(task, before, owner, who=who, why=why)
        return self.plan

    async def refresh(self) -> Plan:
        """Lay the stored run-time changes over the file again: another replica has made one."""
        fresh = await self.steering.effective(self.file_plan)
        for task in self.known_tasks():
            if self.plan.owner_of(task) != fresh.owner_of(task):
                await self.board.move(task, fresh.owner_of(task))
        if fresh.routes != self.plan.routes or fresh.tasks != self.plan.tasks:
            log.info("plan changed on another replica: applied here")
        self.plan = fresh
        return fresh

    async def fleet(self) -> dict[str, Any]:
        """The replicas sharing this host's database, each one's evidence, and the evidence summed over them.

        The others' evidence is their last checkpoint; this replica's is live, so its row
        and ``summed`` agree. On SQLite the fleet is this host alone.
        """
        replicas = getattr(self.store, "replicas", None)
        if replicas is None:
            return {"shared": False, "replicas": [{"replica": "this", "alive": True, "this": True}], "evidence": {},
                    "summed": {route.key: self.evidence.summary(route.key) for route in self.plan.routes}}
        await self.steering.gather()
        stored = await self.store.fleet_evidence()
        for route, state in self.evidence.state().items():  # this replica's live figures, as `summed` counts them
            stored.setdefault(route, {})[self.store.replica] = state
        return {"shared": True, "replicas": await replicas(alive_after=max(5.0, 5 * self.settings.fleet_poll)),
                "evidence": {route: {replica: RouteEvidence.from_state(route, state).summary()
                                     for replica, state in by_replica.items()}
                             for route, by_replica in stored.items()},
                "summed": {route.key: self.evidence.summary(route.key) for route in self.plan.routes}}

    async def reload(self) -> Plan:
        fresh_file = self._parse()
        fresh = await self.steering.effective(fresh_file)
        for task in self.known_tasks():
            if self.plan.owner_of(task) != fresh.owner_of(task):
                await self.board.move(task, fresh.owner_of(task))
        self.file_plan, self.plan = fresh_file, fresh
        for warning in fresh.warnings:
            log.warning("%s", warning)
        log.info("plan reloaded from %s", self.settings.plan_path)
        return fresh

    def plan_text(self) -> str:
        """The plan file's text as it is now (what ``plan export`` edits)."""
        return self.settings.plan_path.read_text(encoding="utf-8")

    def _noise_floor(self, route: str) -> dict[str, Any] | None:
        """The shadow recorder's measured noise floor of a route, where it measures one."""
        measure = getattr(self.recorder, "noise_floor", None)
        if measure is None:
            return None
        try:
            found = measure(route)
        except Exception:
            log.exception("could not read the noise floor of %s", route)
            return None
        return dict(found) if found else None

    def inventory(self) -> list[dict[str, Any]]:
        """Every route anyone knows of (the plan, legacy's URL map, modern's router), and who serves it.

        ``in_legacy`` / ``in_modern`` are None where that app cannot list its routes.
        The rows that say ``in_modern: false`` are the to-do list.
        """
        legacy, modern = self.legacy_routes(), self.modern_routes()
        keys = {(r.method, r.template) for r in self.plan.routes} | set(legacy or ()) | set(modern or ())
        rows = []
        for method, template in sorted(keys, key=lambda r: (r[1], r[0])):
            route = self.plan.find(method, template)
            rows.append({
                "route": f"{method} {template}",
                "in_plan": route is not None,
                "mode": route.mode if route is not None else "legacy",
                "in_legacy": _listed(legacy, method, template),
                "in_modern": _listed(modern, method, template),
            })
        return rows

    def overview(self) -> dict[str, Any]:
        shadow = self.recorder.stats()
        inventory = {row["route"]: row for row in self.inventory()}
        routes = []
        for route in self.plan.routes:
            label = route_label(route)
            nxt = route.next_mode() if route.mode != "modern" else None
            if nxt is not None and self.plan.in_modern(route) is False:
                nxt = None  # modern does not serve it yet: nowhere to move
            routes.append({
                "method": route.method,
                "template": route.template,
                "mode": route.mode,
                "percent": route.percent,
                "shadow_safe": route.shadow_safe,
                "in_legacy": inventory.get(label, {}).get("in_legacy"),
                "in_modern": inventory.get(label, {}).get("in_modern"),
                "traffic": self.metrics_.split.get(label, {"legacy": 0, "modern": 0}),
                "shadow": shadow.get(label, {"compared": 0, "equal": 0, "different": 0, "skipped": 0,
                                             "not_mirrored": 0, "errors": 0, "mismatch_rate": 0.0}),
                "next": None if nxt is None else {"mode": nxt[0], "percent": nxt[1]},
                "auto": route.auto,
                "evidence": self.evidence.summary(label),
                "gate": None if nxt is None else self.steering.verdict(route, *nxt).as_dict(),
                "noise_floor": self.recorder.noise_floor(label),  # A/A: what differs between two legacy answers
            })
        return {
            "plan": str(self.plan.source) if self.plan.source else None,
            "routes": routes,
            "inventory": list(inventory.values()),
            "unrouted": self.metrics_.unrouted_table(),
            "warnings": list(self.plan.warnings),
            "tasks": self.task_owners(),
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
            if self._served is not None:  # one stack alone
                await self._served(scope, receive, send)
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


class _Observers:
    """The front door's observer: the metrics and the evidence both hear of every answer."""

    def __init__(self, metrics: Metrics, evidence: EvidenceBook) -> None:
        self.metrics, self.evidence = metrics, evidence

    def observe(self, route: str, stack: str, status: int, seconds: float) -> None:
        self.metrics.observe(route, stack, status, seconds)
        self.evidence.observe(route, stack, status, seconds)

    def observe_unrouted(self, method: str, path: str, status: int) -> None:
        self.metrics.observe_unrouted(method, path, status)


def _stores(settings: HostSettings) -> tuple[Any, ShadowStore]:
    """The plan store and the shadow store: one SQLite file by default; the fleet's PostgreSQL with CUTOVER_DATABASE."""
    url = database_url(settings.var_dir / "cutover.db")
    if url.engine == "sqlite":
        path = url.path or settings.var_dir / "cutover.db"
        return PlanStore(path), SqliteShadowStore(path)
    from .history_pg import PostgresPlanStore

    where = settings.var_dir.resolve()
    replica = f"{socket.gethostname()}:{hashlib.sha1(str(where).encode()).hexdigest()[:8]}"
    plans = PostgresPlanStore(url.dsn or "", replica=replica, info={"host": socket.gethostname(), "pid": os.getpid(),
                                                                     "var": str(where)})
    return plans, PostgresShadowStore(url.dsn or "", replica=replica)


def _one_line(exc: BaseException) -> str:
    """An error's first line; when that line only introduces a traceback, the traceback's last line too."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return ""
    return f"{lines[0]} {lines[-1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


async def _cancel(task: asyncio.Future[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _listed(routes: list[tuple[str, str]] | None, method: str, template: str) -> bool | None:
    if routes is None:
        return None
    shape = _shape(template)
    return any(m == method and _shape(t) == shape for m, t in routes)


def _shape(template: str) -> tuple[str | None, ...]:
    return tuple(None if part.startswith("{") else part for part in template.split("/")[1:])


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
        log.error("cutover host failed to start: %s", exc)
        await send({"type": "lifespan.startup.failed", "message": str(exc)})
        return
    remove = _on_sighup(host)
    await send({"type": "lifespan.startup.complete"})
    message = await receive()
    assert message["type"] == "lifespan.shutdown"
    remove()
    try:
        await host.stop()
    except Exception as exc:
        log.exception("cutover host failed to stop cleanly")
        await send({"type": "lifespan.shutdown.failed", "message": f"{type(exc).__name__}: {exc}"})
        return
    await send({"type": "lifespan.shutdown.complete"})


def _on_sighup(host: Host) -> Callable[[], None]:
    """Reload the plan on SIGHUP; returns the undo."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_reload(host)))
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        return lambda: None

    def remove() -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)

    return remove


async def _reload(host: Host) -> None:
    try:
        await host.reload()
    except Exception as exc:
        log.error("plan reload failed; keeping the current plan: %s", exc)


async def serve(settings: HostSettings) -> None:
    """Run the co-hosted service (or one stack, with ``settings.only``) under uvicorn until SIGINT or SIGTERM.

    The host starts before uvicorn binds, so a mistake in the plan or the apps raises
    :class:`HostStartError` (or :class:`PlanError`) here, with everything released, instead of
    leaving a half-started server behind.
    """
    host = Host(settings)
    await host.start()
    # The process is ours: what the apps loaded stays for its life, and full collections stop walking it.
    log.debug("froze %d objects of the startup heap", freeze_startup_heap())
    remove = _on_sighup(host)
    try:
        app = host.asgi()
        config = _uvicorn().Config(
            AccessLog(app) if settings.access_log else app, host=settings.host, port=settings.port, lifespan="off",
            # uvicorn's access line goes through logging per request (a tenth of a legacy request's CPU), and
            # cannot say who answered: AccessLog writes one line per request, with X-Served-By, instead.
            access_log=False,
            timeout_graceful_shutdown=int(settings.graceful_timeout),
            # llhttp (C) rather than h11 (Python): a third of the parsing cost per request; the head deadline
            # and limits are ours (bridge.asgi), since uvicorn alone never times out a slow request head.
            http=httptools_protocol(settings.header_timeout),
            ws="none",  # neither stack serves WebSockets, and the head deadline assumes plain HTTP
        )
        await _Server(config).serve()
    finally:
        remove()
        await host.stop()
        log.info("cutover stopped")


def _uvicorn() -> Any:
    import uvicorn

    return uvicorn


class _Server(_uvicorn().Server):  # type: ignore[misc]
    """uvicorn's server, minus its habit of re-raising SIGINT/SIGTERM as ``serve()`` returns.

    That re-raise would end the process before the host stops the apps (modern's lifespan
    exit, which puts in-flight jobs back, and the pool). The signals still make uvicorn
    stop accepting and drain; the process then exits once the host has stopped.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.handle_exit, sig, None)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
