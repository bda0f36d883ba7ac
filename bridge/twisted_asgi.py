"""Serve a twisted.web ``Site`` as an ASGI app, in process, without a socket.

The front door routes each request to legacy or modern; for legacy it calls
:class:`TwistedSiteApp`, which hands the request to the Site over an in-memory
transport and turns what Twisted writes back into ASGI messages. Two paths:

* the lean one, for a plain ``server.Site`` (or a subclass that keeps its
  channel, as legacy's ``LimitedSite`` does): the Site's ``requestFactory``
  builds the ``Request`` from the head the ASGI server parsed, and
  :class:`.twisted_request.DirectChannel` plays ``HTTPChannel``'s part, with
  no second parse of the head and no serialised answer to read back;
* the byte path, for a Site with its own ``buildProtocol`` or channel class
  (and a request line or ``Content-Length`` ``HTTPChannel`` would refuse):
  the head is written out as bytes to the Site's own HTTP/1.1 channel
  (``site.buildProtocol``), and its answer read by :mod:`.twisted_response`.

Either way Twisted sees what it would see on a socket: the request line and
headers as sent, the body as it streams in, ``request.getClientAddress()``
from ``scope["client"]``, and ``isSecure()`` from ``scope["scheme"]``. So a
``Site`` subclass such as legacy's ``LimitedSite``, which answers 413 by
writing raw bytes to the transport and hanging up before reading the body,
behaves exactly as it does over TCP. The rules below hold on both paths.

Semantics, per request:

* One channel per request: ``Connection: close`` is sent to Twisted, which
  hangs up after its response. Hop-by-hop request headers (``Connection``,
  ``Keep-Alive``, ``Transfer-Encoding``, ``Upgrade``, ``Expect``,
  ``Proxy-Connection``) are dropped; the ASGI server has dealt with them.
  The target is ``raw_path`` (the full path: ``root_path`` is not stripped)
  plus ``query_string``, byte for byte; ``Host`` is added from
  ``scope["server"]`` if the scope has none.
* Body framing toward Twisted: a ``Content-Length`` from the client is passed
  through and the body is fed only after Twisted has seen the headers, so a
  413 by length pulls no body at all. Without one, the first body message
  decides: a complete body gets a ``Content-Length`` (none if empty), a
  streamed one is sent ``Transfer-Encoding: chunked``.
* The response is read back by :mod:`.twisted_response` and streamed: what
  Twisted writes between two sends becomes one ``http.response.body`` with
  ``more_body=True``; the last one carries ``more_body=False``. The response
  ends when its framing says so (Content-Length reached, chunked terminator,
  or Twisted closing an unframed body); a request that reaches its
  Content-Length and calls ``finish()`` later is left to do so, not told the
  client left. ``Transfer-Encoding``,
  ``Connection`` and ``Keep-Alive`` are removed from the response (the ASGI
  server frames the body itself), and so are ``Date`` and ``Server`` (the ASGI
  server sets its own; two of each would be malformed), except that ``Connection: close`` is kept
  when Twisted answered before reading the whole request body: the client's
  connection cannot be reused, and uvicorn honours the header.
* Backpressure: past :data:`HIGH_WATER` unsent bytes the channel (and through
  it the request's producer) is paused, and resumed once the ASGI ``send``
  has taken everything.
* ``http.disconnect`` before the response is complete calls
  ``channel.connectionLost(ConnectionDone)``: ``request.notifyFinish()``
  errbacks, as when a TCP client hangs up, so Twisted code cancels its work.
* Twisted closing or aborting without a complete response raises
  :class:`IncompleteResponse`: the server answers 500 or drops the connection,
  which is what a socket client would have seen.
* Head limits: a head that the channel would refuse over TCP (a line over its
  ``MAX_LENGTH``, where it hangs up without a word; more than
  ``totalHeadersSize`` bytes or ``maxHeaders`` fields, where it writes a bare
  400) is answered 431 ``header_too_large`` in the contract's error shape
  instead, without building a channel; anything else would surface as an
  :class:`IncompleteResponse`, a 500. The limits are judged on the head as
  the client sent it: the lines this adapter adds (``Host``,
  ``Connection: close``, framing) are added to the channel's allowance.

Threading: everything runs on the one loop that Twisted's asyncio reactor
uses (shared-loop mode, :func:`bridge.install_reactor`); each request checks
this and raises :class:`RuntimeError` otherwise. The reactor-thread mode is
not supported: the channel would be touched from the wrong thread.

Lifespan: startup calls ``site.doStart()`` and shutdown ``site.doStop()``,
as a listening port would (they are reference-counted, so a Site that also
listens is unaffected); this turns on the Site's access log. Websocket
connections are refused (closed before accept).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from twisted.internet import address
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IConsumer, IPushProducer, ISSLTransport, ITransport
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from .asgi import request_watch, send_error
from .errors import IncompleteResponse
from .twisted_request import DirectChannel, channel_limits, serves_directly
from .twisted_response import ResponseError, ResponseReader

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

__all__ = ["HIGH_WATER", "TwistedSiteApp"]

#: Unsent response bytes above which the channel is asked to pause producing.
HIGH_WATER = 64 * 1024

_HOP_BY_HOP_REQUEST = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"expect", b"proxy-connection"}
)
_HOP_BY_HOP_RESPONSE = frozenset({b"connection", b"keep-alive", b"transfer-encoding"})
#: Set by the ASGI server on every response (uvicorn does by default); Twisted's copies would repeat
#: them, and both are single-valued fields (RFC 9110 6.6.1, 10.2.4).
_SERVER_SET_RESPONSE = frozenset({b"date", b"server"})
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_PATH_SAFE = "/!$&'()*+,;=:@-._~"  # RFC 3986 pchar without '%': a decoded '%' is re-encoded
#: The bytes HTTPChannel takes in a request target (its _parseRequestLine: above 32, up to 176).
_TARGET_BYTES = bytes(range(33, 177))


class TwistedSiteApp:
    """An ASGI 3 application that serves HTTP requests through a twisted.web ``Site``, in process.

    Must be called on the loop Twisted's asyncio reactor runs on.
    """

    def __init__(self, site: Any) -> None:
        self.site = site
        self._site_started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await _Exchange(self.site, scope, receive, send).run()
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1000})
        else:
            raise ValueError(f"TwistedSiteApp does not serve ASGI scope type {kind!r}")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if not self._site_started:
                    self.site.doStart()
                    self._site_started = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._site_started:
                    self._site_started = False
                    self.site.doStop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _shared_reactor() -> Any:
    """The installed reactor, if it runs on this loop; else RuntimeError (never installs one)."""
    reactor = sys.modules.get("twisted.internet.reactor")
    loop = asyncio.get_running_loop()
    if reactor is None or getattr(reactor, "_asyncioEventloop", None) is not loop:
        raise RuntimeError(
            "TwistedSiteApp runs the Site on the caller's loop: Twisted's asyncio reactor must be installed "
            "on this loop first (bridge.install_reactor()); a reactor in another thread is not supported"
        )
    return reactor


def _address(pair: Any, default_port: int) -> address.IPv4Address | address.IPv6Address:
    """A Twisted TCP address for an ASGI ``(host, port)``; unknown peers are ``0.0.0.0:0``."""
    if not pair:
        return address.IPv4Address("TCP", "0.0.0.0", 0)
    if isinstance(pair, tuple):
        return _cached_address(pair, default_port)
    return _new_address(pair, default_port)


@functools.lru_cache(maxsize=4096)
def _cached_address(pair: tuple[Any, ...], default_port: int) -> address.IPv4Address | address.IPv6Address:
    """:func:`_new_address`, once per peer: a keep-alive client sends many requests from one (host, port), and the
    server's own address never changes (Twisted's addresses are values: equal when their fields are)."""
    return _new_address(pair, default_port)


def _new_address(pair: Any, default_port: int) -> address.IPv4Address | address.IPv6Address:
    host, port = str(pair[0]), pair[1]
    port = default_port if port is None else int(port)
    return address.IPv6Address("TCP", host, port) if _is_v6(host) else address.IPv4Address("TCP", host, port)


@functools.lru_cache(maxsize=1024)
def _is_v6(host: str) -> bool:
    """Whether ``host`` is an IPv6 literal (cached: a front door sees the same few peers again and again)."""
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False  # a name (ASGI test clients say "testserver"); Twisted does not resolve it


@implementer(ITransport, IConsumer, IPushProducer)
class _Transport:
    """What an HTTPChannel writes to: buffers the response bytes for the pump, and stands in for TCP.

    As a producer (of request bytes) it is paused by the channel; as a consumer
    (of response bytes) it pauses the channel past :data:`HIGH_WATER`.
    ``loseConnection`` delivers ``connectionLost(ConnectionDone)`` on the next
    loop turn, as a TCP transport does.
    """

    def __init__(self, reactor: Any, peer: address.IAddress, host: address.IAddress, secure: bool) -> None:
        self.reactor = reactor
        # The reactor's own loop (checked by _shared_reactor): a close is delivered on its next turn, as over
        # TCP, with call_soon rather than reactor.callLater, which reschedules Twisted's timer every time.
        self.loop = asyncio.get_running_loop()
        self.peer, self.host = peer, host
        self.protocol: Any = None
        self.disconnecting = False  # Twisted asked to close (LineReceiver reads this)
        self.disconnected = False  # connectionLost was delivered
        self.aborted = False
        self.detached = False  # the ASGI side is done: further output is discarded
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.wake = asyncio.Event()  # output, a close, or news for the pump
        self.reading = asyncio.Event()  # cleared while the channel pauses us
        self.reading.set()
        self.producer: Any = None
        self.streaming = False
        self.producer_paused = False
        if secure:
            alsoProvides(self, ISSLTransport)

    # ITransport
    def write(self, data: bytes) -> None:
        if self.disconnecting or self.disconnected or self.detached or not data:
            return
        self.chunks.append(data)
        self.buffered += len(data)
        self.wake.set()
        if self.buffered > HIGH_WATER and self.producer is not None and self.streaming and not self.producer_paused:
            self.producer_paused = True
            self.producer.pauseProducing()

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if self.disconnecting or self.disconnected:
            return
        self.disconnecting = True
        self.wake.set()
        self.loop.call_soon(self.connection_lost, Failure(ConnectionDone()))

    def abortConnection(self) -> None:
        if self.disconnected:
            return
        self.aborted = self.disconnecting = True
        self.chunks.clear()
        self.buffered = 0
        self.wake.set()
        self.loop.call_soon(self.connection_lost, Failure(ConnectionAborted()))

    def getPeer(self) -> address.IAddress:
        return self.peer

    def getHost(self) -> address.IAddress:
        return self.host

    # ISSLTransport, when the scheme is https: HTTPChannel calls setTcpNoDelay on any ITCPTransport.
    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def getPeerCertificate(self) -> None:
        return None

    # IConsumer
    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError(f"producer {self.producer!r} is already registered")
        self.producer, self.streaming, self.producer_paused = producer, streaming, False
        if not streaming:
            producer.resumeProducing()

    def unregisterProducer(self) -> None:
        self.producer = None
        self.producer_paused = False

    # IPushProducer: the request bytes we feed
    def pauseProducing(self) -> None:
        self.reading.clear()

    def resumeProducing(self) -> None:
        self.reading.set()

    def stopProducing(self) -> None:
        self.loseConnection()

    # for the exchange
    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        return data

    def drained(self) -> None:
        """Everything taken has been sent: let the producer go on."""
        if self.producer is None or self.buffered:
            return
        if not self.streaming:
            self.producer.resumeProducing()
        elif self.producer_paused:
            self.producer_paused = False
            self.producer.resumeProducing()

    def connection_lost(self, reason: Failure) -> None:
        if self.disconnected:
            return
        self.disconnected = self.disconnecting = True
        self.reading.set()
        self.wake.set()
        self.protocol.connectionLost(reason)


class _Exchange:
    """One request into the Site, through a :class:`.DirectChannel` or a fresh ``HTTPChannel``: feed the
    request in, pump the response out."""

    def __init__(self, site: Any, scope: Scope, receive: Receive, send: Send) -> None:
        self.site, self.scope, self.receive, self.send = site, scope, receive, send
        self.chunked = False
        self.declared: int | None = None
        self.lengths = 0  # Content-Length fields the client sent
        self.body_complete = False  # Twisted has been fed the whole request body
        self.response_done = False  # the last body message is (being) sent
        self.client_gone = False
        self.added: list[tuple[bytes, bytes]] = []  # header fields this adapter adds, on top of the client's
        self.fed = 0  # body bytes fed to Twisted
        self.feeder: asyncio.Task[None] | None = None
        self.channel: DirectChannel | None = None  # the lean path's; None on the byte path
        self.request: Any = None
        self.watching = False  # the server tells us of the client leaving (no feeder task needed for that)

    async def run(self) -> None:
        reactor = _shared_reactor()
        scope = self.scope
        method = scope["method"].encode("ascii")
        target = self._target()
        version = b"HTTP/1.0" if scope.get("http_version") == "1.0" else b"HTTP/1.1"
        self.line = method + b" " + target + b" " + version + b"\r\n"
        headers = self._headers()
        first: Message | None = None
        if self.declared is None:
            first = await self.receive()
            if first["type"] == "http.disconnect":
                return  # gone before Twisted saw anything
            if first.get("more_body", False):
                self.chunked = True
                self.added.append((b"Transfer-Encoding", b"chunked"))
                headers.append(self.added[-1])
            elif first.get("body", b""):
                self.added.append((b"Content-Length", b"%d" % len(first["body"])))
                headers.append(self.added[-1])
        default_port = 443 if scope.get("scheme") == "https" else 80
        self.transport = transport = _Transport(
            reactor,
            peer=_address(scope.get("client"), 0),
            host=_address(scope.get("server"), default_port),
            secure=scope.get("scheme") == "https",
        )
        direct = serves_directly(self.site) and self._parses_as_twisted(method, target) and self.lengths <= 1 \
            and (self.declared is None or self.declared >= 0)
        try:
            if direct:
                if not await self._start_direct(method, target, version, headers, first):
                    return
            elif not await self._start_bytes(headers, first):
                return
            await self._pump(first if self.chunked else None)
        finally:
            transport.detached = True
            feeder = self.feeder
            if feeder is not None and not feeder.done():
                feeder.cancel()
                try:
                    await feeder
                except asyncio.CancelledError:
                    pass
            if not self.response_done and not transport.disconnecting and transport.protocol is not None:
                # Cancelled, or failed: the request will never be answered through us.
                transport.connection_lost(Failure(ConnectionLost("the ASGI request ended without a response")))

    async def _start_direct(self, method: bytes, target: bytes, version: bytes, headers: list[tuple[bytes, bytes]],
                            first: Message | None) -> bool:
        """Build the Request from the parsed head (the lean path); False if it was answered here (431)."""
        too_big = self._over_channel_limits(*channel_limits())
        if too_big is not None:
            await send_error(self.send, 431, "header_too_large", too_big)
            return False
        transport = self.transport
        self.channel = channel = DirectChannel(self.site, transport, head_only=method == b"HEAD",
                                               http10=version == b"HTTP/1.0")
        transport.protocol = channel
        self.method, self.target, self.version = method, target, version
        if self.chunked:
            length: int | None = None
        elif self.declared is not None:
            length = self.declared
        else:
            length = len(first.get("body", b"")) if first is not None else 0
        self.request = channel.start(headers, length)
        if transport.disconnecting:
            return True  # refused on the head (a 413 by length): the pump reads the answer, no body is pulled
        if length == 0:
            self.body_complete = True
            self.request.requestReceived(method, target, version)
        elif first is not None and not self.chunked:
            self._take(first)  # the whole body came with the head
        elif self.declared is not None:
            await self._first_piece()
        return True

    async def _start_bytes(self, headers: list[tuple[bytes, bytes]], first: Message | None) -> bool:
        """Hand the head, as bytes, to a fresh channel of the Site's own (the byte path); False if answered here."""
        transport = self.transport
        head = self.line + b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"
        if self.declared == 0 or (first is not None and not self.chunked):
            # Twisted gets the whole body with the head. Set before it can answer: its answer is a normal one.
            self.body_complete = True
            head += first.get("body", b"") if first is not None else b""
        protocol = self.site.buildProtocol(transport.peer)
        if protocol is None:
            raise RuntimeError(f"{self.site!r} refused to build a protocol")
        transport.protocol = protocol
        protocol.makeConnection(transport)
        # An HTTPChannel registers itself with its transport as the producer of the response: that is the
        # object whose head limits apply (buildProtocol may return a wrapper around it).
        channel = transport.producer
        too_big = self._over_channel_limits(getattr(channel, "MAX_LENGTH", None), getattr(channel, "totalHeadersSize", None),
                                            getattr(channel, "maxHeaders", None))
        if too_big is not None:
            transport.connection_lost(Failure(ConnectionDone("the request head is over the channel's limits")))
            await send_error(self.send, 431, "header_too_large", too_big)
            return False
        self._allow_added_lines(channel)
        protocol.dataReceived(head)
        if not self.body_complete and not self.chunked and not transport.disconnecting:
            await self._first_piece()
        return True

    async def _first_piece(self) -> None:
        """A body with a Content-Length: its first piece is fed here, with no task of its own, so a small POST
        costs none. Twisted has seen the head: a 413 by length has hung up, pulling nothing."""
        transport = self.transport
        await transport.reading.wait()
        if not transport.disconnecting:
            message = await self.receive()
            if not transport.disconnecting:
                self._take(message)

    # ------------------------------------------------------------------ request

    def _target(self) -> bytes:
        """The request target as the client sent it: ``raw_path`` and the query, byte for byte."""
        scope = self.scope
        raw_path = scope.get("raw_path")
        if raw_path:
            target = bytes(raw_path).partition(b"?")[0]  # some servers left the query in raw_path
        else:
            target = quote(scope.get("path") or "/", safe=_PATH_SAFE).encode("ascii")
        query = scope.get("query_string") or b""
        if query:
            target += b"?" + bytes(query)
        return target

    def _headers(self) -> list[tuple[bytes, bytes]]:
        """Header fields for Twisted (without framing, which the body decides); records Content-Length."""
        fields: list[tuple[bytes, bytes]] = []
        has_host = False
        for name, value in self.scope.get("headers") or ():
            name, value = bytes(name), bytes(value)
            if not _TOKEN.match(name) or _BAD_VALUE.search(value):
                raise ValueError(f"invalid request header {name!r}: {value!r}")
            lower = name.lower()
            if lower in _HOP_BY_HOP_REQUEST:
                continue
            if lower == b"content-length":
                self.lengths += 1
                self.declared = int(value) if value.strip().isdigit() else -1  # Twisted answers 400 to junk
            has_host = has_host or lower == b"host"
            fields.append((name, value))
        if not has_host:
            self.added.append((b"Host", self._host_header()))
        self.added.append((b"Connection", b"close"))
        return fields + self.added

    @staticmethod
    def _parses_as_twisted(method: bytes, target: bytes) -> bool:
        """Whether ``HTTPChannel`` would take this request line (else the byte path lets Twisted answer it)."""
        return bool(_TOKEN.match(method)) and bool(target) and not target.translate(None, _TARGET_BYTES)

    def _over_channel_limits(self, line_limit: Any, size_limit: Any, count_limit: Any) -> str | None:
        """Why a channel with these limits would refuse this head as the client sent it, or None."""
        raw = self.scope.get("headers") or ()
        longest = size = len(self.line) - 2
        for name, value in raw:
            length = len(name) + 2 + len(value)
            size += length
            if length > longest:
                longest = length
        if isinstance(line_limit, int) and longest > line_limit:
            return f"a request line or header line is {longest} bytes; the limit is {line_limit}"
        if isinstance(size_limit, int) and size > size_limit:
            return f"the request head is {size} bytes; the limit is {size_limit}"
        if isinstance(count_limit, int) and len(raw) > count_limit:
            return f"the request has {len(raw)} header fields; the limit is {count_limit}"
        return None

    def _allow_added_lines(self, protocol: Any) -> None:
        """Raise this channel's head limits by the lines we add, so they are judged on the client's head."""
        if isinstance(getattr(protocol, "totalHeadersSize", None), int):
            protocol.totalHeadersSize += sum(len(name) + 2 + len(value) for name, value in self.added)
        if isinstance(getattr(protocol, "maxHeaders", None), int):
            protocol.maxHeaders += len(self.added)

    def _host_header(self) -> bytes:
        """``Host`` for a scope without one (HTTP/2 servers may omit it), from ``scope["server"]``."""
        server = self.scope.get("server")
        if not server:
            return b"localhost"
        host, port = str(server[0]), server[1]
        name = f"[{host}]".encode("ascii") if ":" in host else host.encode("idna")
        default = 443 if self.scope.get("scheme") == "https" else 80
        return name if port in (None, default) else name + b":%d" % int(port)

    async def _feed(self, pending: Message | None) -> None:
        """Feed the rest of the body as it arrives, then watch for the client leaving until the response is done.

        Nothing is pulled once Twisted has hung up (a 413 before the body): the
        rest of the body is left unread, and the response says ``Connection: close``.
        """
        transport = self.transport
        message = pending
        while not self.body_complete:
            if message is None:
                await transport.reading.wait()
                if transport.disconnecting:
                    return
                message = await self.receive()
                if transport.disconnecting:
                    return
            if not self._take(message):
                return
            message = None
        while not self.response_done:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self._client_left()
                return

    def _take(self, message: Message) -> bool:
        """Feed one ASGI request message to Twisted; False once there is nothing more to feed (the client left)."""
        if message["type"] == "http.disconnect":
            self._client_left()
            return False
        if message["type"] == "http.request" and self.request is not None:
            return self._take_direct(message)
        if message["type"] == "http.request":
            protocol = self.transport.protocol
            body = message.get("body", b"")
            if body:
                if self.chunked:
                    protocol.dataReceived(b"%x\r\n" % len(body))
                    protocol.dataReceived(body)
                    protocol.dataReceived(b"\r\n")
                else:
                    protocol.dataReceived(body)
                self.fed += len(body)
            # No await between feeding the last bytes and setting the flag: Twisted may answer at once.
            if not message.get("more_body", False):
                if self.chunked:
                    protocol.dataReceived(b"0\r\n\r\n")
                elif self.declared is not None and self.fed < self.declared:
                    self._client_left()  # the body ended short of its Content-Length
                    return False
                self.body_complete = True
            elif self.declared is not None and self.fed >= self.declared:
                self.body_complete = True  # Twisted has all it will read; the rest is dropped
        return True

    def _take_direct(self, message: Message) -> bool:
        """:meth:`_take` on the lean path: each piece to ``handleContentChunk``, as Twisted's decoders do, up to
        the Content-Length; ``requestReceived`` once the body is whole."""
        request, declared = self.request, self.declared
        body = message.get("body", b"")
        if body:
            if declared is not None:
                body = body[: declared - self.fed]
            self.fed += len(body)
            if body:
                request.handleContentChunk(body)
            if self.transport.disconnecting:
                return True  # refused mid-body (a 413): nothing more is fed
        more = message.get("more_body", False)
        if not more and declared is not None and self.fed < declared:
            self._client_left()  # the body ended short of its Content-Length
            return False
        if not more or (declared is not None and self.fed >= declared):
            # No await between the last piece and the flag: Twisted may answer at once.
            self.body_complete = True
            request.requestReceived(self.method, self.target, self.version)
        return True

    def _client_left(self) -> None:
        if self.response_done or self.client_gone:
            return
        self.client_gone = True
        self.transport.connection_lost(Failure(ConnectionDone("the ASGI client disconnected")))

    # ------------------------------------------------------------------ response

    async def _pump(self, pending: Message | None) -> None:
        """Send what Twisted writes, as it writes it. The feeder task starts only if the pump must wait:
        a request Twisted answers at once (most GETs, small POSTs) needs none, and neither does one whose
        body is in, under a server that tells of the client leaving (:class:`bridge.asgi.RequestWatch`)."""
        transport = self.transport
        direct = self.channel is not None
        reader: DirectChannel | ResponseReader = self.channel or ResponseReader(head_only=self.scope["method"] == "HEAD")
        eof_fed = False
        while True:
            if not transport.wake.is_set():
                if self.feeder is None and not self.watching:
                    watch = request_watch(self.scope) if self.body_complete else None
                    if watch is not None and watch.on_disconnect(self._client_left):
                        self.watching = True  # the body is in: only the client leaving is left to hear of
                    else:
                        self.feeder = feeder = asyncio.ensure_future(self._feed(pending))
                        feeder.add_done_callback(lambda _: transport.wake.set())
                await transport.wake.wait()
            transport.wake.clear()
            if self.client_gone:
                return
            feeder = self.feeder
            if feeder is not None and feeder.done() and not feeder.cancelled() and feeder.exception() is not None:
                raise feeder.exception()  # type: ignore[misc]
            if transport.aborted:
                raise IncompleteResponse("Twisted aborted the connection")
            data = transport.take()
            try:
                events = reader.feed(data) if data or direct else []
                if transport.disconnecting and not eof_fed:  # Twisted hung up, and all it wrote is in the reader
                    eof_fed = True
                    events += reader.close()
            except ResponseError as exc:
                if exc.closed:
                    raise IncompleteResponse(f"Twisted closed the connection {exc}") from exc
                raise IncompleteResponse(f"Twisted's response is not valid HTTP/1.1: {exc}") from exc
            parts: list[bytes] = []
            for event in events:
                kind = event[0]
                if kind == "data":
                    parts.append(event[1])
                elif kind == "start":
                    start = {"type": "http.response.start", "status": event[1],
                             "headers": self._response_headers(event[2])}
                    if not await self._send(start):
                        return
                else:  # end
                    self.response_done = True
                    await self._send({"type": "http.response.body", "body": b"".join(parts), "more_body": False})
                    return
            if parts and not await self._send({"type": "http.response.body", "body": b"".join(parts), "more_body": True}):
                return
            transport.drained()

    def _response_headers(self, headers: Any) -> list[tuple[bytes, bytes]]:
        out = [(bytes(n), bytes(v)) for n, v in headers
               if bytes(n) not in _HOP_BY_HOP_RESPONSE and bytes(n) not in _SERVER_SET_RESPONSE]
        if not self.body_complete:
            out.append((b"connection", b"close"))  # answered before the body was read: do not reuse
        return out

    async def _send(self, message: Message) -> bool:
        """Send; False if the client has gone (ASGI servers may raise OSError then)."""
        try:
            await self.send(message)
        except OSError:
            self._client_left()
            return False
        return not self.client_gone
