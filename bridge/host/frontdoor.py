"""The front door: one ASGI app that sends every request to legacy or modern, as the plan says.

* ``legacy`` / ``modern``: that stack answers.
* ``canary``: ``percent`` of requests go to modern. A request carrying the
  plan's sticky header (or, without one, coming from the same client address)
  always lands on the same side, so a user does not flip between stacks.
* ``shadow``: legacy answers; modern gets a copy of the request, and its
  answer is compared and recorded (:mod:`.shadow`), never sent. Shadow must
  not cost the client, so the copy is made only for the route's sampled share
  of requests (``sample`` in the plan), and only after legacy's answer has gone
  out; it then waits while other client requests are in flight (up to
  ``shadow_max_delay`` seconds), so client work goes first; copies run one
  at a time, and the recorder's slots bound how many wait. Requests with
  side effects are mirrored only on ``shadow_safe`` routes. Modern failing in
  shadow, by raising or by answering wrong, never reaches the client. What a copy
  carries and how it is compared (the shadow marker, id mapping on stateful
  routes, A/A noise, settling) is :mod:`.mirror`'s; the plan's catch-all
  (``"*"``) shadows unrouted requests.

Every response carries ``X-Served-By: legacy|modern``.

Slow request bodies are cut off here, for both stacks, with 408
``request_timeout`` (:class:`bridge.asgi.BodyGuard`): uvicorn has no body
timeout, and twisted.web's is hours long.

Request heads are held here to one set of limits (:func:`bridge.asgi.head_refusal`),
whichever stack would answer: 414 ``uri_too_long`` and 431 ``header_too_large``,
from the front door itself (``X-Served-By: cutover``). Left to the stacks, a
long header line got legacy's hang-up (a 500) and modern's 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from ..asgi import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_BODY_TIMEOUT,
    DEFAULT_MIN_BODY_RATE,
    ASGIApp,
    BodyGuard,
    Message,
    Receive,
    Scope,
    Send,
    head_refusal,
    request_watch,
    send_error,
)
from ..parity.diff import Exchange
from .mirror import Mirror, mirrors
from .plan import Plan, Route
from .shadow import ShadowRecorder

log = logging.getLogger(__name__)
ADMIN_PREFIX = "/_cutover"
#: Seconds a shadow copy waits for a moment with no client request in flight before it runs anyway.
SHADOW_MAX_DELAY = 0.5


class Observer(Protocol):
    def observe(self, route: str, stack: str, status: int, seconds: float) -> None: ...
    def observe_unrouted(self, method: str, path: str, status: int) -> None: ...


UNROUTED = "unrouted"


def route_label(route: Route | None) -> str:
    return f"{route.method} {route.template}" if route is not None else UNROUTED


def canary_bucket(route: Route, key: str) -> float:
    """A stable number in [0, 100) for this route and client: the same key, the same side."""
    digest = hashlib.sha256(f"{route.method} {route.template}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 / 100


class FrontDoor:
    """The routing ASGI app. ``plan`` is read on every request, so swapping it takes effect at once."""

    def __init__(
        self,
        *,
        legacy: ASGIApp,
        modern: ASGIApp,
        plan: Callable[[], Plan],
        recorder: ShadowRecorder,
        observer: Observer,
        admin: ASGIApp,
        max_shadow_body: int = 20 * 1024 * 1024,
        rng: random.Random | None = None,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
        min_body_rate: float = DEFAULT_MIN_BODY_RATE,
        max_body_timeout: float = DEFAULT_MAX_BODY_TIMEOUT,
        shadow_max_delay: float = SHADOW_MAX_DELAY,
    ) -> None:
        self.apps = {"legacy": legacy, "modern": modern}
        self.plan = plan
        self.recorder = recorder
        self.observer = observer
        self.admin = admin
        self.max_shadow_body = max_shadow_body
        self.rng = rng or random.Random()
        self.body_timeout = body_timeout  # read on every request: a test or an operator may change it
        self.min_body_rate = min_body_rate
        self.max_body_timeout = max_body_timeout
        self.shadow_max_delay = shadow_max_delay
        self.active = 0  # client requests being served now (the admin API excluded)
        self.unsampled: dict[str, int] = {}  # per route: shadowed requests left out by the sample rate
        self._quiet = asyncio.Event()  # set when no client request is in flight
        self._quiet.set()
        self._lane = asyncio.Lock()  # one shadow copy at a time
        self._background: set[asyncio.Task[Any]] = set()
        self.mirror = Mirror(legacy, modern, recorder, _capture, rng=self.rng, lane=self._shadow_lane)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.apps["legacy"](scope, receive, send)
            return
        refused = head_refusal(scope)
        if refused is not None:
            await send_error(send, *refused, extra={"X-Served-By": "cutover"})
            return
        # A request that announces no body has none (RFC 9112 6.3): nothing to time, and no timer to set.
        timeout = self.body_timeout if _announces_body(scope) else None
        guard = BodyGuard(receive, send, timeout=timeout, min_rate=self.min_body_rate,
                          max_timeout=self.max_body_timeout, watch=request_watch(scope))
        await guard.run(self._route, scope)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            await self.admin(scope, receive, send)
            return
        plan = self.plan()
        route = plan.route_for(scope["method"], path)
        label = route_label(route)
        self.active += 1
        self._quiet.clear()
        if route is None and plan.catch_all is not None and plan.catch_all.mode == "shadow":
            route = plan.catch_all  # shadow what no route matches; still counted as unrouted
        try:
            if route is not None and route.mode == "shadow":
                await self._shadow(route, label, plan.sample_for(route), scope, receive, send)
            else:
                await self._forward(self.pick(plan, route, scope), label, scope, receive, send)
        finally:
            self.active -= 1
            if not self.active:
                self._quiet.set()

    def pick(self, plan: Plan, route: Route | None, scope: Scope) -> str:
        """The stack that answers this request (shadow answers from legacy)."""
        if route is None or route.mode in ("legacy", "shadow"):
            return "legacy"
        if route.mode == "modern":
            return "modern"
        key = None
        if plan.sticky_header:
            wanted = plan.sticky_header.lower().encode("latin-1")
            key = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == wanted), None)
        if key is None and scope.get("client"):
            key = str(scope["client"][0])
        bucket = canary_bucket(route, key) if key else self.rng.uniform(0, 100)
        return "modern" if bucket < route.percent else "legacy"

    async def _forward(self, stack: str, label: str, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500

        async def served_by(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), (b"x-served-by", stack.encode())]}
            await send(message)

        try:
            await self.apps[stack](dict(scope), receive, served_by)
        finally:
            self.observer.observe(label, stack, status, time.perf_counter() - started)
            if label == UNROUTED:
                self.observer.observe_unrouted(scope["method"], scope["path"], status)

    # ------------------------------------------------------------------ shadow

    async def _shadow(
        self, route: Route, label: str, sample: float, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if not mirrors(route, scope["method"]):
            self.recorder.not_mirrored(label)
            await self._forward("legacy", label, scope, receive, send)
            return
        if sample < 1.0 and self.rng.random() >= sample:
            self.unsampled[label] = self.unsampled.get(label, 0) + 1
            await self._forward("legacy", label, scope, receive, send)
            return
        body, complete = await _read_body(receive, self.max_shadow_body)
        replay = _replay(body, complete, receive)
        if not complete or not self.recorder.admit(label):
            await self._forward("legacy", label, scope, replay, send)
            return
        mirrored = self.mirror.begin(self.plan(), route, label, scope, body)
        legacy_capture = _Capture()

        async def tee(message: Message) -> None:
            legacy_capture.take(message)
            await send(message)

        started = time.perf_counter()
        try:
            await self._forward("legacy", label, scope, replay, tee)
        finally:
            legacy_took = time.perf_counter() - started  # legacy's side of the paired latencies
            # Legacy's answer is out (or legacy failed): only now does the copy go (see Mirror.finish).
            comparison = self.mirror.finish(mirrored, legacy_capture.exchange(), legacy_took)
            task = asyncio.ensure_future(self._compare(label, comparison))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    @contextlib.asynccontextmanager
    async def _shadow_lane(self) -> AsyncIterator[None]:
        """Where shadow's own calls run, at a lower priority than clients.

        Copies run one at a time (the shadow lane), each once no client is in flight or after
        ``shadow_max_delay``: a burst of copies never lands on the loop and the pool at once.
        """
        async with self._lane:
            await self._after_clients()
            yield

    async def _compare(self, label: str, comparison: Awaitable[None]) -> None:
        try:
            await comparison
        except Exception:
            log.exception("shadow comparison failed for %s", label)
        finally:
            self.recorder.release()

    async def _after_clients(self) -> None:
        """Wait while client requests are in flight, up to ``shadow_max_delay`` (then go anyway: the copy holds
        one of the recorder's few slots, so waiting longer would only skip more copies)."""
        await asyncio.sleep(0)  # the client's last bytes are flushed first
        if self._quiet.is_set() or self.shadow_max_delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.shadow_max_delay):
                await self._quiet.wait()

    async def drain(self) -> None:
        """Wait for shadow comparisons still running (at shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _announces_body(scope: Scope) -> bool:
    """Whether the request head says a body follows (a Content-Length or a Transfer-Encoding)."""
    return any(name in _BODY_HEADERS for name, _ in scope.get("headers", ()))


_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})


class _Capture:
    """One side's response, collected from ASGI messages."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []

    def take(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            for name, value in message.get("headers", ()):
                self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))

    def exchange(self) -> Exchange:
        return Exchange(status=self.status, headers=self.headers, body=b"".join(self.chunks))


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The request body, up to ``limit`` bytes; ``complete`` is False if there is more (not shadowed then)."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client left (or timed out) mid-body: not a request to copy
            return b"".join(parts), False
        chunk = message.get("body", b"")
        parts.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(parts), True
        if size > limit:
            return b"".join(parts), False


def _replay(body: bytes, complete: bool, receive: Receive) -> Receive:
    """Hand the buffered body to an app, then the client's own receive (more body, or its disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return replayed


async def _capture(app: ASGIApp, scope: Scope, body: bytes) -> Exchange:
    """Run ``app`` on a copy of the request and collect its whole answer."""
    capture = _Capture()
    done = asyncio.Event()
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()  # a shadow request has no client to disconnect; it ends when the app is done
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        capture.take(message)

    try:
        await app(scope, receive, send)
    finally:
        done.set()
    return capture.exchange()


