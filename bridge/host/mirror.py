"""Mirrored requests on stateful routes: id mapping, request rewriting, A/A samples, settling.

The front door hands a mirrored request here (:meth:`Mirror.begin` when it
arrives, :meth:`Mirror.finish` once legacy has answered it). What this adds
to a plain "send modern a copy":

* **The shadow marker.** Modern's copy carries ``scope["extensions"]["cutover.shadow"]``
  (:mod:`bridge.shadowing`), so its writes land in its shadow namespace, and
  the route's ``shadow_write`` says whether they run or are only validated.
* **Id mapping.** A route with ``id_from`` creates a resource: legacy's answer
  names it by one id, modern's (shadow) answer by another. Both are read at
  that JSON path and remembered (:class:`IdMap`, bounded). A route with
  ``id_param`` names a resource in its path: the copy sent to modern has the
  legacy id replaced by modern's, and the comparison reads modern's id as
  legacy's (``aliases``), so ``Location``, ``job_id`` and messages that name
  it compare equal. A follower that arrives while its creator's copy is
  still running waits for it. An id legacy knows but the map does not (made
  before shadowing, or by a write that was only validated) is not mirrored
  (counted ``unmapped``): modern could only answer 404. An id legacy does not
  know either (its 404) is mirrored as it is: both should say 404.
* **In order, per resource.** The copies that name one id are compared one
  after another: each is sent to modern only once the comparison before it
  (settling included) is done. The client saw legacy's answers in order (a GET
  saying "succeeded", then its DELETE); modern's twin is brought to the same
  point before the next copy reaches it, so a DELETE never cancels a job on
  modern that legacy had already finished.
* **A/A.** For a sample of requests on routes that are safe to repeat (no
  creator, a safe method or a ``shadow_safe`` route without ids), legacy is
  asked a second time and its two answers are compared: what differs is noise,
  learned per route by the recorder and left out of legacy-vs-modern diffs.
* **Settling.** A GET whose two answers differ can be asked again on both
  sides until they agree, up to the route's ``settle`` seconds: a job that
  finished on one side a moment before the other is not a mismatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from ..asgi import ASGIApp, Scope
from ..parity.diff import Exchange, diff
from ..shadowing import ShadowMarker, mark
from .plan import SAFE_METHODS, Plan, Route
from .shadow import ShadowRecorder

__all__ = ["IdMap", "Mirror", "MirroredRequest", "mirrors"]

Capture = Callable[[ASGIApp, Scope, bytes], Awaitable[Exchange]]
UNMIRRORED = ""  # an id whose resource has no modern twin (a validated write, a failed copy)
MAX_IDS = 50_000
FOLLOWER_WAIT = 30.0  # how long a follower waits for its creator's copy to answer
SETTLE_FIRST = 0.05


def mirrors(route: Route, method: str) -> bool:
    """Whether a request in shadow mode gets a copy: ``shadow_safe`` routes, and on the catch-all safe methods."""
    if route.catch_all:
        return bool(route.shadow_safe) or method in SAFE_METHODS
    return bool(route.shadow_safe)


class IdMap:
    """Legacy id -> modern id, for the resources mirrored requests created; the oldest go past ``limit``."""

    def __init__(self, limit: int = MAX_IDS) -> None:
        self.limit = limit
        self._ids: OrderedDict[str, asyncio.Future[str]] = OrderedDict()

    def expect(self, legacy_id: str) -> None:
        """Legacy created ``legacy_id``; modern's twin is on its way."""
        if legacy_id not in self._ids:
            self._ids[legacy_id] = asyncio.get_running_loop().create_future()
            while len(self._ids) > self.limit:
                _, oldest = self._ids.popitem(last=False)
                if not oldest.done():
                    oldest.set_result(UNMIRRORED)

    def resolve(self, legacy_id: str, modern_id: str | None) -> None:
        """Modern's twin is ``modern_id`` (None: there is none)."""
        self.expect(legacy_id)
        future = self._ids[legacy_id]
        if not future.done():
            future.set_result(modern_id or UNMIRRORED)

    def known(self, legacy_id: str) -> bool:
        return legacy_id in self._ids

    async def lookup(self, legacy_id: str, wait: float = FOLLOWER_WAIT) -> str | None:
        """Modern's id for ``legacy_id`` ("" if it has no twin), waiting for a pending one; None if unknown."""
        future = self._ids.get(legacy_id)
        if future is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(future), wait)
        except TimeoutError:
            return UNMIRRORED

    def __len__(self) -> int:
        return len(self._ids)


@dataclass
class MirroredRequest:
    """One request on its way: what :meth:`Mirror.begin` learned, for :meth:`Mirror.finish`."""

    plan: Plan
    route: Route
    label: str
    scope: Scope
    body: bytes
    marker: ShadowMarker
    started: float = field(default_factory=time.monotonic)


def _json_at(body: bytes, path: str) -> str | None:
    """The string (or int) at a dotted JSON path of a body; None when there is none."""
    try:
        value: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)


def _with_segment(scope: Scope, index: int, value: str) -> Scope:
    """A copy of ``scope`` whose path has segment ``index`` (0-based after "/") replaced by ``value``."""
    segments = scope["path"].split("/")
    segments[index + 1] = value
    path = "/".join(segments)
    copy = dict(scope)
    copy["path"] = path
    copy["raw_path"] = path.encode("utf-8")
    return copy


class Mirror:
    """Sends modern its copies and compares the answers; see the module docstring."""

    def __init__(
        self, legacy: ASGIApp, modern: ASGIApp, recorder: ShadowRecorder, capture: Capture,
        rng: random.Random | None = None, ids: IdMap | None = None,
        lane: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        self.legacy, self.modern = legacy, modern
        self.recorder = recorder
        self.capture = capture
        self.rng = rng or random.Random()
        self.ids = ids or IdMap()
        #: Where shadow's own calls run (the front door's: one at a time, after clients); none by default.
        self.lane = lane or contextlib.nullcontext
        self._last: dict[str, asyncio.Future[None]] = {}  # legacy id -> the comparison naming it that ends last

    def begin(self, plan: Plan, route: Route, label: str, scope: Scope, body: bytes) -> MirroredRequest:
        """Note a request legacy is about to answer; its copy goes once legacy has answered (:meth:`finish`)."""
        marker = ShadowMarker(label, route.shadow_write)
        return MirroredRequest(plan, route, label, scope, body, marker)

    def finish(self, pending: MirroredRequest, legacy: Exchange, legacy_took: float | None = None) -> Awaitable[None]:
        """Legacy has answered: copy and compare in the background (the awaitable); ids it created are expected from now on.

        ``legacy_took`` (seconds legacy spent on the request) pairs with modern's own time on its copy.
        """
        route = pending.route
        if route.id_from is not None and 200 <= legacy.status < 300:
            legacy_id = _json_at(legacy.body, route.id_from)
            if legacy_id is not None:
                self.ids.expect(legacy_id)  # before any follower can ask: the client has only just got this id
        if route.param_index is None:
            return self._finish(pending, legacy, legacy_took)
        legacy_id = pending.scope["path"].split("/")[route.param_index + 1]
        before = self._last.get(legacy_id)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last[legacy_id] = done
        return self._in_order(legacy_id, before, done, self._finish(pending, legacy, legacy_took))

    async def _in_order(self, legacy_id: str, before: asyncio.Future[None] | None, done: asyncio.Future[None],
                        comparison: Awaitable[None]) -> None:
        try:
            if before is not None:
                await asyncio.wait({before}, timeout=FOLLOWER_WAIT)
            await comparison
        finally:
            done.set_result(None)
            if self._last.get(legacy_id) is done:
                del self._last[legacy_id]

    async def _finish(self, pending: MirroredRequest, legacy: Exchange, legacy_took: float | None) -> None:
        route, label, scope = pending.route, pending.label, pending.scope
        aliases: dict[str, str] = {}
        modern_scope = mark(scope, pending.marker)
        index = route.param_index
        if index is not None:
            legacy_id = scope["path"].split("/")[index + 1]
            modern_id = await self.ids.lookup(legacy_id)
            if modern_id == UNMIRRORED or (modern_id is None and legacy.status != 404):
                self.recorder.unmapped(label)
                return
            if modern_id is not None:
                modern_scope = _with_segment(modern_scope, index, modern_id)
                aliases[modern_id] = legacy_id
        async with self.lane():
            began = time.perf_counter()
            try:
                modern: Exchange | BaseException = await self.capture(self.modern, modern_scope, pending.body)
            except Exception as exc:  # modern raising in shadow is a finding, not an outage
                modern = exc
            modern_took = time.perf_counter() - began
        if route.id_from is not None:
            self._map_created(route, legacy, modern, aliases)
        rules = pending.plan.rules_for(route)
        if self._aa_eligible(pending) and self.rng.random() < pending.plan.aa_sample(route):
            async with self.lane():
                again = await self.capture(self.legacy, dict(scope), pending.body)
            self.recorder.learn_noise(label, diff(legacy, again, rules))
        settle = pending.plan.settle(route)
        if (isinstance(modern, Exchange) and settle > 0 and scope["method"] in SAFE_METHODS
                and not diff(legacy, modern, rules, aliases).equal):
            legacy, modern = await self._settle(scope, modern_scope, pending.body, rules, aliases, settle, legacy, modern)
        request = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())},
            "body_bytes": len(pending.body),
        }
        paired = (legacy_took, modern_took) if legacy_took is not None else None
        await self.recorder.record(label, scope["method"], scope["path"], request, legacy, modern,
                                   rules=rules, aliases=aliases, latencies=paired)

    def _aa_eligible(self, pending: MirroredRequest) -> bool:
        """Safe to send legacy twice: nothing created, and a safe method or a shadow_safe route without ids."""
        route, method = pending.route, pending.scope["method"]
        if route.id_from is not None:
            return False
        return method in SAFE_METHODS or (bool(route.shadow_safe) and route.id_param is None)

    def _map_created(self, route: Route, legacy: Exchange, modern: Exchange | BaseException,
                     aliases: dict[str, str]) -> None:
        assert route.id_from is not None
        legacy_id = _json_at(legacy.body, route.id_from)
        if legacy_id is None or not 200 <= legacy.status < 300:
            return
        modern_id = _json_at(modern.body, route.id_from) if isinstance(modern, Exchange) else None
        if modern_id is not None:
            aliases[modern_id] = legacy_id
        # a write that was only validated has a twin that never runs: its followers are not comparable
        self.ids.resolve(legacy_id, modern_id if route.shadow_write == "run" else None)

    async def _settle(
        self, scope: Scope, modern_scope: Scope, body: bytes, rules: Any, aliases: dict[str, str],
        seconds: float, legacy: Exchange, modern: Exchange,
    ) -> tuple[Exchange, Exchange]:
        """Ask both sides again (a safe method) until they agree or ``seconds`` pass; the last pair counts."""
        deadline = time.monotonic() + seconds
        wait = SETTLE_FIRST
        while time.monotonic() + wait < deadline:
            await asyncio.sleep(wait)
            wait = min(wait * 2, 1.0)
            legacy, modern = await asyncio.gather(
                self.capture(self.legacy, dict(scope), body), self.capture(self.modern, modern_scope, body)
            )
            if diff(legacy, modern, rules, aliases).equal:
                break
        return legacy, modern
