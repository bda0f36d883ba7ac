"""ASGI pieces that any app behind cutover can use.

:class:`BodyLimitMiddleware` refuses oversized request bodies before they are
read whole: from the ``Content-Length`` header when there is one, else as soon
as the streamed body passes the limit. Starlette and FastAPI read bodies into
memory on ``await request.body()`` with no limit of their own.

:func:`head_refusal` holds every request head to one set of limits
(:data:`MAX_TARGET_BYTES`, :data:`MAX_HEADERS`, :data:`MAX_HEAD_BYTES`). The
servers behind cutover disagree without it: uvicorn (h11) refuses a head over
16 KiB only when it arrives in pieces, and then in plain text; twisted.web
hangs up on a line over 16 KiB without an answer, answers a plain 400 past
16 KiB of head or 500 fields, and takes everything else. The limits sit under
Twisted's, so a head the front door admits is one legacy admits too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import select
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_BODY_TIMEOUT",
    "DEFAULT_MIN_BODY_RATE",
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "MAX_TARGET_BYTES",
    "REQUEST_WATCH",
    "BodyGuard",
    "BodyLimitMiddleware",
    "RequestWatch",
    "h11_protocol",
    "head_refusal",
    "httptools_protocol",
    "json_error",
    "request_watch",
    "send_error",
]

#: Seconds a request body may take, and the longest wait for its next piece.
DEFAULT_BODY_TIMEOUT = 30.0
#: Bytes per second that earn a body one more second (Apache mod_reqtimeout's MinRate): a slow
#: but honest upload keeps going, a client trickling a byte at a time is cut off.
DEFAULT_MIN_BODY_RATE = 500.0
#: The most a body may take however fast it arrives (Apache's maxtimeout): without it a client
#: sending just over MIN_BODY_RATE could hold a connection, and an admission slot, for hours.
DEFAULT_MAX_BODY_TIMEOUT = 300.0
#: Seconds a client may take to send a request's line and headers.
DEFAULT_HEADER_TIMEOUT = 20.0
#: Bytes of a request head (request line and header lines, each with its CRLF, and the blank line).
#: Past it: 431 ``header_too_large``. twisted.web's own limit is 16 KiB without the CRLFs.
MAX_HEAD_BYTES = 16 * 1024
#: Header fields in one request (Apache's LimitRequestFields). Past it: 431 ``header_too_large``.
MAX_HEADERS = 100
#: Bytes of the request target, path and query. Past it: 414 ``uri_too_long``.
MAX_TARGET_BYTES = 8 * 1024


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of an error in the contract's shape: ``{"error": {"code", "message"}}``."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    return raw, body


def head_refusal(scope: Scope) -> tuple[int, str, str] | None:
    """``(status, code, message)`` if the request head passes one of the limits, or its target is not a path."""
    raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
    if not raw_path.startswith(b"/"):
        # "*" or an absolute URL: twisted.web resolves "http://host/status" to /status while Starlette
        # finds no such path, and answers "POST *" with a bare 405; neither stack serves these forms.
        return 400, "malformed_request", "the request target must be a path starting with /"
    query = scope.get("query_string") or b""
    target = len(raw_path) + (len(query) + 1 if query else 0)
    if target > MAX_TARGET_BYTES:
        return 414, "uri_too_long", f"the request target is {target} bytes; the limit is {MAX_TARGET_BYTES}"
    headers = scope.get("headers") or ()
    if len(headers) > MAX_HEADERS:
        return 431, "header_too_large", f"the request has {len(headers)} header fields; the limit is {MAX_HEADERS}"
    request_line = len(scope.get("method", "")) + 1 + target + len(" HTTP/1.1\r\n")
    size = request_line + sum(len(name) + 2 + len(value) + 2 for name, value in headers) + 2
    if size > MAX_HEAD_BYTES:
        return 431, "header_too_large", f"the request head is {size} bytes; the limit is {MAX_HEAD_BYTES}"
    return None


#: The scope extension under which cutover's own protocols (:func:`httptools_protocol`, :func:`h11_protocol`)
#: put a :class:`RequestWatch` of each request.
REQUEST_WATCH = "cutover.request_watch"


class RequestWatch:
    """What the server knows of one request that ASGI's ``receive()`` tells only by being awaited.

    A layer that would set a timer around ``receive()``, or keep a task
    waiting on it to hear of the client leaving, asks here first. On a small
    POST both were a good part of the front door's CPU per request. Under any
    other server there is no watch (:func:`request_watch` says None), and such
    a layer does as before.
    """

    __slots__ = ("_cycle", "_protocol")

    def __init__(self, protocol: Any, cycle: Any) -> None:
        self._protocol, self._cycle = protocol, cycle

    def body_ready(self) -> bool:
        """Whether the next ``receive()`` returns at once: a piece of body is buffered, or the request is over."""
        cycle = self._cycle
        return bool(cycle.message_event.is_set() or cycle.disconnected or cycle.response_complete)

    def on_disconnect(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` (on a later loop turn) if the client leaves before the response is complete.

        :returns: False if that can no longer happen here (the response is
            complete, or the client has left already): then ``receive()``
            says what happened, as it would have without the watch.
        """
        cycle = self._cycle
        if cycle.response_complete or cycle.disconnected:
            return False
        self._protocol._watch_disconnect(cycle, callback)
        return True


def request_watch(scope: Scope) -> RequestWatch | None:
    """The request's :class:`RequestWatch`, if a cutover protocol serves it."""
    extensions = scope.get("extensions")
    return extensions.get(REQUEST_WATCH) if extensions else None


class BodyGuard:
    """One request's ``receive`` and ``send``, guarded: 413 past ``limit``, 408 when the body is too slow.

    The body must arrive within ``timeout`` seconds of the request, plus one
    second per ``min_rate`` bytes received, but never later than ``max_timeout``
    seconds after the request; and no piece may take longer than ``timeout``. On either refusal the app receives ``http.disconnect`` (so it
    stops reading), the client gets the error unless the app had already
    started a response, and whatever the app sends afterwards is dropped; the
    error says ``Connection: close``, so the server hangs up on the unread rest.
    Once the body is complete, ``receive`` is passed through untimed (apps
    wait on it for the client leaving). With the server's ``watch``, a receive
    that cannot wait (the body is already buffered) sets no timer.
    """

    def __init__(
        self,
        receive: Receive,
        send: Send,
        *,
        limit: int | None = None,
        timeout: float | None = DEFAULT_BODY_TIMEOUT,
        min_rate: float = DEFAULT_MIN_BODY_RATE,
        max_timeout: float = DEFAULT_MAX_BODY_TIMEOUT,
        watch: RequestWatch | None = None,
    ) -> None:
        self._receive, self._send = receive, send
        self._watch = watch
        self.limit, self.timeout, self.min_rate = limit, timeout, min_rate
        self.received = 0
        self.body_done = False
        self.response_started = False
        self.rejected = False
        self.client_left = False  # the server said http.disconnect: nobody is there to answer
        if timeout is None:  # nothing to time (a request that announces no body): no clock read per request
            self._deadline = self._cap = 0.0
            return
        self._loop = asyncio.get_running_loop()
        start = self._loop.time()
        self._deadline = start + timeout
        self._cap = start + max(max_timeout, timeout)

    async def receive(self) -> Message:
        if self.rejected:
            return {"type": "http.disconnect"}
        if self.body_done or self.timeout is None or (self._watch is not None and self._watch.body_ready()):
            message = await self._receive()  # nothing to wait for (the server has it): no timer
        else:
            wait = min(self.timeout, self._deadline - self._loop.time())
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    message = await self._receive()
            except TimeoutError:
                await self._reject(408, "request_timeout", f"the request body did not arrive in time ({self.received} bytes read)")
                return {"type": "http.disconnect"}
        if message["type"] == "http.disconnect":
            self.client_left = True
        elif message["type"] == "http.request":
            size = len(message.get("body", b""))
            self.received += size
            self._deadline = min(self._deadline + size / self.min_rate, self._cap)
            if not message.get("more_body", False):
                self.body_done = True
            if self.limit is not None and self.received > self.limit:
                await self._reject(413, "body_too_large", f"the request body passed the limit of {self.limit} bytes")
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.rejected:
            return
        if message["type"] == "http.response.start":
            self.response_started = True
        await self._send(message)

    async def run(self, app: ASGIApp, scope: Scope) -> None:
        """Call ``app`` through the guard. An app failing on a body the guard refused (Starlette raises
        ``ClientDisconnect``) is not an error: the client already has its answer. Nor is one failing
        after the client left (a half-closed or dropped connection): that is one line in the log, not a
        traceback."""
        try:
            await app(scope, self.receive, self.send)
        except Exception as exc:
            if self.rejected:
                return
            if self.client_left:
                log.info("%s %s: the client left before the answer (%s)", scope.get("method"), scope.get("path"),
                         type(exc).__name__)
                return
            raise

    async def _reject(self, status: int, code: str, message: str) -> None:
        self.rejected = True
        if not self.response_started:
            self.response_started = True
            await send_error(self._send, status, code, message)


class BodyLimitMiddleware:
    """Answer 413 ``body_too_large`` for HTTP request bodies over ``max_body_bytes``, 408 for slow bodies,
    and 414/431 for heads past :func:`head_refusal`'s limits.

    With a ``Content-Length`` over the limit the app is never called and the
    body never read. A body without one (chunked) is counted as it streams,
    and refused by :class:`BodyGuard` as soon as it passes the limit; the
    server then closes the connection, since the rest of the body was not read.
    ``body_timeout=None`` turns the slow-body check off.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
        min_body_rate: float = DEFAULT_MIN_BODY_RATE,
        max_body_timeout: float = DEFAULT_MAX_BODY_TIMEOUT,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.min_body_rate = min_body_rate
        self.max_body_timeout = max_body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = head_refusal(scope)
        if refused is not None:
            await send_error(send, *refused)
            return
        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await send_error(send, 413, "body_too_large", f"the request body is {declared} bytes; the limit is {limit}")
            return
        guard = BodyGuard(receive, send, limit=limit, timeout=self.body_timeout, min_rate=self.min_body_rate,
                          max_timeout=self.max_body_timeout, watch=request_watch(scope))
        await guard.run(self.app, scope)


def h11_protocol(header_timeout: float = DEFAULT_HEADER_TIMEOUT) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, plus a deadline on each request head (uvicorn has none), plus the head limit.

    Pass it as ``uvicorn.Config(http=...)``. A connection that has not sent a
    complete request line and headers within ``header_timeout`` seconds, from
    its opening or from the end of its previous response, is answered 408
    ``request_timeout`` if it sent part of a head, and closed either way. A
    head still incomplete past :data:`MAX_HEAD_BYTES` is answered 431
    ``header_too_large`` in the contract's shape (h11 alone would answer a
    plain-text 400, and only if the head came in pieces); bytes that are not
    HTTP/1.1 get 400 ``malformed_request`` in that shape too, not uvicorn's
    plain text. A client that shuts
    down its sending side after a complete request still gets its answer
    (uvicorn alone closes at once); the connection closes after it.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11Protocol(_head_guarded(H11Protocol, header_timeout)):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # h11's own buffer limit (16 KiB by default) must not answer before MAX_HEAD_BYTES does.
            self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=4 * MAX_HEAD_BYTES)

        def _head_pending(self) -> int:
            return len(self.conn.trailing_data[0])

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a complete request head arrived
                self._disarm()
                if self.cycle is not None:
                    self._expose_watch(self.cycle)

    return HeaderTimeoutH11Protocol


def httptools_protocol(header_timeout: float = DEFAULT_HEADER_TIMEOUT) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol (llhttp, in C) with the same head deadline and limits as :func:`h11_protocol`.

    The front door's choice: h11 parses in Python, and cost a request on
    ``cutover serve`` about three times what llhttp costs (measured on a bare
    ASGI app: 260 vs 70 µs of CPU per request). What differs from uvicorn's own:
    the head deadline, 431 for a head that passes :data:`MAX_HEAD_BYTES` before
    it ends (llhttp has no limit of its own), the contract's JSON for bytes that
    are not HTTP/1.1, the half-close, and ``raw_path``: uvicorn's httptools
    protocol puts the parsed path there, so an absolute-form target
    (``GET http://host/x``) would reach the apps as ``/x``; here, as with h11,
    it is the target as sent, which :func:`head_refusal` answers 400.
    """
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class NoUpgradeHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc]
        """llhttp stops parsing at ``Upgrade`` (and CONNECT), leaving a body unread as another protocol's bytes.
        Neither stack upgrades (no WebSockets here), so, as h11 does, such a request is an ordinary one: served,
        and the connection closed after it; one whose body llhttp left unparsed is refused 400."""

        _upgrade_ignored = False

        def data_received(self, data: bytes) -> None:
            if self._upgrade_ignored:
                return  # the connection closes after the answer in flight
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                self._ignore_upgrade(len(data) - int(upgrade.args[0]))
            except httptools.HttpParserError:
                self.send_400_response("Invalid HTTP request received.")

        def _ignore_upgrade(self, unparsed: int) -> None:
            self._upgrade_ignored = True
            cycle = self.cycle
            declared = any(name in (b"content-length", b"transfer-encoding") and value.strip() not in (b"", b"0")
                           for name, value in self.headers)
            if cycle is None or unparsed or declared:
                self.send_400_response("a request body after an upgrade")
                return
            cycle.keep_alive = False

    class HeaderTimeoutHttpToolsProtocol(_head_guarded(NoUpgradeHttpToolsProtocol, header_timeout)):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # llhttp refuses every control character in a header value; h11 (and so the contract) refuses
            # only NUL and line breaks (RFC 9110 5.5 allows obs-text; DEL and the rest are what h11 takes).
            # So llhttp's value check is off and on_header applies h11's rule.
            self.parser.set_dangerous_leniencies(lenient_headers=True)

        def on_header(self, name: bytes, value: bytes) -> None:
            if _H11_BAD_VALUE.search(value):
                raise ValueError("a header value with NUL or a line break")  # -> HttpParserCallbackError -> 400
            super().on_header(name, value)

        def _head_pending(self) -> int:
            return self._head_bytes  # llhttp keeps no buffer: every byte since the deadline was armed is head

        # uvicorn arms a keep-alive timer (a call_later, and a cancel on the next request's bytes) after every
        # response; the head timer, one per connection, already runs then, and keeps that timeout too.
        _idle_by_head_timer = True

        def _next_request(self) -> None:
            """uvicorn's ``on_response_complete`` without its keep-alive timer."""
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            self._unset_keepalive_if_required()
            self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()
            self._expose_watch(self.cycle)
            target = self.url.partition(b"?")[0]
            if not target.startswith(b"/") and "raw_path" in self.scope:
                self.scope["raw_path"] = target  # as h11 reports it: head_refusal answers a target that is not a path

    return HeaderTimeoutHttpToolsProtocol


#: What h11 refuses inside a header value (its field-vchar is anything but NUL and whitespace; SP and HTAB
#: may only separate): NUL, CR, LF, FF and VT.
_H11_BAD_VALUE = re.compile(rb"[\x00\r\n\x0b\x0c]")


def _head_guarded(base: type[Any], header_timeout: float) -> type[Any]:
    """``base`` (a uvicorn HTTP/1.1 protocol) with the head deadline, the head limit, JSON refusals and half-close.

    The subclass says how many bytes of an unfinished head it holds (``_head_pending``) and
    disarms the deadline when a complete head arrives.
    """

    class HeadGuarded(base):  # type: ignore[misc, valid-type]
        # The head deadline: one timer per connection, not one per request. Arming sets the deadline; the
        # timer, when it fires early (the deadline moved on) or while no head is awaited, is set again.
        _head_timer: asyncio.TimerHandle | None = None
        _head_deadline: float | None = None  # None: no head is awaited (disarmed)
        _idle_deadline: float | None = None  # the keep-alive timeout, while no byte of the next request came
        #: Whether the head timer also keeps the keep-alive timeout (then the protocol sets no timer of its own).
        _idle_by_head_timer = False
        _head_bytes = 0
        _half_closed = False
        #: Per request (uvicorn's cycle) still being answered: who asked to hear of the client leaving.
        _watched: dict[Any, list[Callable[[], None]]] | None = None

        def _head_pending(self) -> int:
            raise NotImplementedError

        def _expose_watch(self, cycle: Any) -> None:
            """Put the new request's :class:`RequestWatch` in its scope, before its app is called."""
            extensions = cycle.scope.get("extensions")
            if extensions is None:
                cycle.scope["extensions"] = {REQUEST_WATCH: RequestWatch(self, cycle)}
            else:
                extensions[REQUEST_WATCH] = RequestWatch(self, cycle)

        def _watch_disconnect(self, cycle: Any, callback: Callable[[], None]) -> None:
            if self._watched is None:
                self._watched = {}
            self._watched.setdefault(cycle, []).append(callback)

        def _forget_answered(self) -> None:
            watched = self._watched
            if watched:
                for cycle in [cycle for cycle in watched if cycle.response_complete]:
                    del watched[cycle]

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.transport = _CoalescedWrites(transport, self.loop)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            super().connection_lost(exc)
            watched, self._watched = self._watched, None
            for cycle, callbacks in (watched or {}).items():
                if not cycle.response_complete:  # the client left before its answer was complete
                    for callback in callbacks:
                        self.loop.call_soon(callback)

        def eof_received(self) -> bool | None:
            cycle = self.cycle
            if cycle is not None and not cycle.more_body and not cycle.response_complete:
                self._half_closed = True  # the request is whole: keep the sending side open for its answer
                return True
            return None

        def data_received(self, data: bytes) -> None:
            if self._head_deadline is not None:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._head_deadline is not None and self._head_pending() > MAX_HEAD_BYTES \
                    and not self.transport.is_closing():
                self._refuse(431, "header_too_large",
                             f"the request head is over {MAX_HEAD_BYTES} bytes, the limit", "Request Header Fields Too Large")

        def send_400_response(self, msg: str) -> None:
            # uvicorn's answer to bytes its parser refuses, in plain text; here in the contract's shape.
            if self.transport.is_closing():
                return  # already answered (a refusal inside a parser callback ends up here too)
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                if cycle.response_started:
                    self.transport.close()  # mid-response: no room for another answer
                    return
                # A body that broke its framing (a bad chunk size): the app's answer, if any, is
                # dropped as for a client gone, and its receive() wakes to http.disconnect.
                cycle.disconnected = True
                cycle.message_event.set()
            self._refuse(400, "malformed_request", "the request is not valid HTTP/1.1", "Bad Request")

        def on_response_complete(self) -> None:
            self._forget_answered()
            if self._half_closed:
                self.transport.close()  # the client sends no more requests; what was written is flushed first
                return
            self.transport.flush()  # the answer is whole: one send for its head and body
            # Before the next request is handled (a pipelined one disarms it again). Where the head timer also
            # keeps uvicorn's keep-alive timeout, a connection that sends nothing closes after that, as before.
            self._arm(self.timeout_keep_alive if self._idle_by_head_timer else None)
            self._next_request()

        def _next_request(self) -> None:
            super().on_response_complete()

        def _arm(self, idle: float | None = None) -> None:
            if self.transport.is_closing():
                self._head_deadline = None
                return
            self._head_bytes = 0
            now = self.loop.time()
            self._head_deadline = now + header_timeout
            self._idle_deadline = now + idle if idle is not None and idle < header_timeout else None
            deadline = self._idle_deadline or self._head_deadline
            timer = self._head_timer
            if timer is None or timer.when() > deadline:  # a timer set for a later head deadline is too late now
                if timer is not None:
                    timer.cancel()
                self._head_timer = self.loop.call_at(deadline, self._head_timer_fired)

        def _disarm(self) -> None:
            self._head_deadline = None

        def _deadline(self) -> float | None:
            """When the connection is cut: the head deadline, or sooner while it has sent nothing (idle)."""
            if self._idle_deadline is not None and not self._head_bytes and self._head_deadline is not None:
                return self._idle_deadline
            return self._head_deadline

        def _head_timer_fired(self) -> None:
            deadline = self._deadline()
            if deadline is None:
                self._head_timer = None  # no head awaited: the next _arm sets a timer again
            elif self.loop.time() < deadline:
                self._head_timer = self.loop.call_at(deadline, self._head_timer_fired)
            else:
                self._head_timer = None
                self._head_timed_out()

        def _head_timed_out(self) -> None:
            if self._idle_deadline is not None and not self._head_bytes and _bytes_waiting(self.transport):
                # Idle past the keep-alive timeout, but the next request is in the kernel, unread (the loop was
                # busy): it came in time. It has the head deadline now; data_received takes it next turn.
                self._idle_deadline = None
                self._head_timer = self.loop.call_at(self._head_deadline, self._head_timer_fired)
                return
            self._head_deadline = None
            if self.transport.is_closing():
                return
            if self._head_bytes:
                self._refuse(408, "request_timeout", f"the request head did not arrive within {header_timeout:g} s",
                             "Request Timeout")
            self.transport.close()

        def timeout_keep_alive_handler(self) -> None:
            """uvicorn's keep-alive timeout (the h11 protocol's), which spares a request already waiting unread."""
            if _bytes_waiting(self.transport):
                self.timeout_keep_alive_task = None  # the request's head is next: the head deadline holds it
                return
            super().timeout_keep_alive_handler()

        def _refuse(self, status: int, code: str, message: str, reason: str) -> None:
            """Answer a head that never became a request, outside the parser (it has no request to answer), and close."""
            self._disarm()
            headers, body = json_error(status, code, message, {"Connection": "close"})
            head = b"HTTP/1.1 %d %s\r\n" % (status, reason.encode()) + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
            self.transport.write(head + b"\r\n" + body)
            self.transport.close()

    return HeadGuarded


def _bytes_waiting(transport: Any) -> bool:
    """Whether the connection's socket holds bytes (or its end) not read yet. Asked only when a timeout fires."""
    sock = transport.get_extra_info("socket")
    fd = sock.fileno() if sock is not None else -1
    if fd < 0:
        return False
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])  # Windows


#: Held bytes past which :class:`_CoalescedWrites` writes at once.
_COALESCE_BYTES = 64 * 1024


class _CoalescedWrites:
    """A connection's transport whose writes in one loop turn go out as one ``send``.

    uvicorn writes a response's head and its body separately, two system calls
    where twisted.web makes one; on a small answer that second call was about a
    tenth of the front door's CPU per request. Writes are held until the
    response completes (:meth:`flush`), the transport is closed, or the end of
    the current loop turn, whichever comes first, so a streamed body is never
    held back. Everything else is the transport's own.
    """

    __slots__ = ("_transport", "_loop", "_held", "_size", "_scheduled")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._held: list[bytes] = []
        self._size = 0
        self._scheduled = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._held.append(data)
        self._size += len(data)
        if self._size >= _COALESCE_BYTES:
            self.flush()  # a large body goes straight on: the transport's own buffer limits pause the app
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, data: Any) -> None:
        for piece in data:
            self.write(piece)

    def flush(self) -> None:
        self._scheduled = False
        held = self._held
        if held:
            self._held, self._size = [], 0
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held, self._size = [], 0
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return int(self._transport.get_write_buffer_size()) + self._size

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def send_error(send: Send, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
    """Answer with the contract's error and ``Connection: close`` (the rest of the request is not read)."""
    headers, body = json_error(status, code, message, {"Connection": "close", **(extra or {})})
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
