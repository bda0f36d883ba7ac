"""The lean path into twisted.web: a ``Request`` built from a head the ASGI server has already parsed.

Through :class:`~bridge.twisted_asgi.TwistedSiteApp`'s byte path a
legacy request is parsed three times: by the front door's HTTP parser, again
by Twisted's ``HTTPChannel`` (after the adapter wrote the head back out as
bytes), and Twisted's answer once more by :mod:`.twisted_response`. Profiled
under wrk, that round trip (the channel, its per-connection timeout timer,
the second parse, the reader) was about a fifth of the front door's CPU per
legacy request. Here the Site's own ``requestFactory`` builds the Request,
and :class:`DirectChannel` plays the part ``HTTPChannel`` plays for it: the
same calls in the same order (headers, ``parseCookies``, ``gotLength``, each
body piece through ``handleContentChunk``, ``requestReceived`` once the body
is whole), and the answer is taken from ``writeHeaders`` and ``write`` as
structured data, never serialised.

What does not change: the Request's own code runs as over TCP, so a
``requestFactory`` that refuses a body in ``gotLength`` or
``handleContentChunk`` by writing raw bytes to ``request.channel.transport``
and hanging up (legacy's 413) is read back through the same
:class:`~.twisted_response.ResponseReader` as before; producers (push and
pull, such as ``static.File``'s, with Range) register with the same
in-memory transport and are paused and resumed by it; ``notifyFinish`` fires
on a client leaving through ``Request.connectionLost``; the access log is
the Site's. :func:`serves_directly` says when a Site may take this path: a
Site that replaces ``buildProtocol`` or its channel class could hook what
``HTTPChannel`` does, so it keeps the byte path.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import ISSLTransport
from twisted.web import server
from twisted.web.http import HTTPChannel  # once: twisted.web.http is a deprecation proxy, slow to look into
from twisted.web.iweb import INonQueuedRequestFactory

from .twisted_response import ResponseError, ResponseReader

__all__ = ["DirectChannel", "serves_directly"]

_NO_BODY = frozenset({204, 304})


def serves_directly(site: Any) -> bool:
    """Whether ``site`` is served as ``server.Site`` builds its channels: its own ``buildProtocol`` and
    ``HTTPChannel``, and a ``server.Request`` subclass for its requests (what a Site subclass may change
    on the channel, this path would skip, so such a Site keeps the byte path)."""
    cls = type(site)
    return (
        isinstance(site, server.Site)
        and cls.buildProtocol is server.Site.buildProtocol
        and cls.protocol is server.Site.protocol
        and "protocol" not in vars(site)
        and isinstance(site.requestFactory, type)
        and issubclass(site.requestFactory, server.Request)
    )


class DirectChannel:
    """What one twisted.web ``Request`` talks to instead of an ``HTTPChannel``; also what the pump reads.

    ``transport`` is the adapter's in-memory transport: body bytes the Request
    writes are buffered there (so its high-water mark pauses producers), and
    bytes written to it before any ``writeHeaders`` are a raw response, read by
    a :class:`ResponseReader`. :meth:`feed` and :meth:`close` turn what was
    written into the reader's events, so the pump serves both paths alike.
    """

    def __init__(self, site: Any, transport: Any, *, head_only: bool, http10: bool) -> None:
        self.site = self.factory = site
        self.requestFactory = site.requestFactory
        self.transport = transport
        self.request: Any = None
        self.done = False  # requestDone: the Request has finished
        self._head_only = head_only
        self._http10 = http10
        self._head: tuple[int, Any] | None = None  # written by the Request, not yet read
        self._started = False
        self._ended = False
        self._remaining: int | None = None  # Content-Length bytes still to come
        self._raw: ResponseReader | None = None

    # ------------------------------------------------------------------ the request side

    def start(self, headers: list[tuple[bytes, bytes]], length: int | None) -> Any:
        """Build the Request from the head, as ``HTTPChannel`` does up to the end of the headers."""
        factory = self.requestFactory
        request = factory(self) if INonQueuedRequestFactory.providedBy(factory) else factory(self, 0)
        self.request = request
        add = request.requestHeaders.addRawHeader
        for name, value in headers:
            add(name, value.strip(b" \t"))  # as HTTPChannel.headerReceived stores it
        request.parseCookies()
        request.responseHeaders.setRawHeaders(b"Connection", [b"close"])  # HTTPChannel.checkPersistence's doing
        request.gotLength(length)
        return request

    # ------------------------------------------------------------------ what a Request calls

    def getPeer(self) -> Any:
        return self.transport.getPeer()

    def getHost(self) -> Any:
        return self.transport.getHost()

    def isSecure(self) -> bool:
        return ISSLTransport.providedBy(self.transport)

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        if self._head is not None or self._started or self.transport.detached:
            return
        # The ASGI server frames the body itself: the Request writes it unchunked from here on.
        if self.request is not None:
            self.request.chunked = 0
        self._head = (int(code), headers)
        self.transport.wake.set()

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.transport.write(b"".join(data))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.transport.unregisterProducer()

    def loseConnection(self) -> None:
        self.transport.loseConnection()

    def requestDone(self, request: Any) -> None:
        self.done = True
        self.transport.wake.set()

    def _respondToBadRequestAndDisconnect(self) -> None:  # the name twisted.web's Request calls
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        self.loseConnection()

    # ------------------------------------------------------------------ what the transport calls

    def connectionLost(self, reason: Any) -> None:
        request = self.request
        if request is not None and not self.done and not request.finished:
            request.connectionLost(reason)

    # ------------------------------------------------------------------ what the pump reads

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        """The events since the last call: the head (once), ``data`` as body, and the end."""
        if self._raw is not None:
            return self._raw.feed(data)
        events: list[tuple[Any, ...]] = []
        if not self._started:
            if self._head is None:
                if data:  # written to the transport without a head: a raw response
                    self._raw = ResponseReader(head_only=self._head_only)
                    return self._raw.feed(data)
                return events
            self._start(events)
        if self._ended:
            return events
        if data:
            if self._remaining is not None:
                data = data[: self._remaining]
                self._remaining -= len(data)
            if data:
                events.append(("data", data))
            if self._remaining == 0:
                return self._end(events)
        if self.done:
            if self._remaining:
                raise ResponseError("in the middle of its response", closed=True)
            self._end(events)
        return events

    def close(self) -> list[tuple[Any, ...]]:
        """The Request hung up: the end of an unframed HTTP/1.0 body, or :class:`ResponseError`."""
        if self._raw is not None:
            return self._raw.close()
        if self._ended:
            return []
        if not self._started:
            if self._head is None:
                self._raw = ResponseReader(head_only=self._head_only)
                return self._raw.close()
            return self.feed(b"") + self.close()
        if self._remaining is None and self._http10:
            return self._end([])
        raise ResponseError("in the middle of its response", closed=True)

    def _start(self, events: list[tuple[Any, ...]]) -> None:
        status, raw = self._head  # type: ignore[misc]
        self._head = None
        self._started = True
        if not 200 <= status <= 999:
            raise ResponseError(f"a bad status {status}")
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        for name, values in raw.getAllRawHeaders():
            lower = name.lower()
            for value in values:
                value = value.strip()
                if lower == b"content-length":
                    if not value.isdigit() or (length is not None and int(value) != length):
                        raise ResponseError(f"a bad Content-Length {value[:40]!r}")
                    length = int(value)
                headers.append((lower, value))  # hop-by-hop ones are the adapter's to drop, as on the byte path
        events.append(("start", status, headers))
        if self._head_only or status in _NO_BODY or length == 0:
            self._end(events)
        else:
            self._remaining = length

    def _end(self, events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        self._ended = True
        events.append(("end",))
        return events


def channel_limits() -> tuple[int, int, int]:
    """``HTTPChannel``'s head limits (line length, head size, header count), read now (they may be patched)."""
    return HTTPChannel.MAX_LENGTH, HTTPChannel.totalHeadersSize, HTTPChannel.maxHeaders
