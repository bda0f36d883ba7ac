"""TwistedSiteApp: a twisted.web Site served in process through ASGI, checked against the same Site on a socket.

The legacy service's real Site answers through both paths; small Resource
trees cover what legacy does not do (streamed writes, a raising resource,
a request that never finishes, a push producer, echoing what Twisted saw).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_twisted
from skimage import data as skdata
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web import http, resource, server
from zope.interface import implementer

from bridge import SharedPool
from bridge.errors import IncompleteResponse
from bridge.testing import asyncio_test
from bridge.twisted_asgi import HIGH_WATER, TwistedSiteApp, _Transport
from legacy import LegacyService, LegacySettings
from tests.conftest import WAIT, in_daemon_thread, until
from tests.resources import Hang
from tests.synth import encode, render

BODY_LIMIT = 1024 * 1024
CLIENT = ("203.0.113.7", 43210)
Message = dict[str, Any]
# Made at import, not on the loop: encoding takes long enough to show up as a slow callback.
ASTRONAUT_PNG = encode(skdata.astronaut())
MANY_LINES_PNG = render((1600, 1600), *[(40, 40 + 60 * i, f"LINE NUMBER {i} OF MANY") for i in range(25)])


# ---------------------------------------------------------------- a hand-written ASGI server side


@dataclass
class Driver:
    """Plays the server for one request: hands out body chunks (counting pulls) and records what the app sends.

    After the body, ``receive`` waits for ``disconnect`` (the client hangs up)
    or, without one, for the response to complete, as uvicorn does.
    """

    chunks: list[bytes] = field(default_factory=list)
    body_ends: bool = True  # False: the last chunk says more_body=True (the client stops mid-body)
    disconnect: asyncio.Event | None = None
    send_delay: float = 0.0
    on_pull: Callable[[int], None] | None = None
    pulled: int = 0
    sent_empty: bool = False
    messages: list[Message] = field(default_factory=list)
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    async def receive(self) -> Message:
        if self.pulled < len(self.chunks):
            if self.on_pull is not None:
                self.on_pull(self.pulled)
            chunk = self.chunks[self.pulled]
            self.pulled += 1
            last = self.pulled == len(self.chunks) and self.body_ends
            return {"type": "http.request", "body": chunk, "more_body": not last}
        if not self.chunks and not self.sent_empty:
            self.sent_empty = True  # the one empty message of a request without a body
            return {"type": "http.request", "body": b"", "more_body": False}
        await (self.disconnect or self.complete).wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete.set()
        if self.send_delay:
            await asyncio.sleep(self.send_delay)

    @property
    def status(self) -> int:
        assert self.messages and self.messages[0]["type"] == "http.response.start", self.messages
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return list(self.messages[0]["headers"])

    @property
    def bodies(self) -> list[tuple[bytes, bool]]:
        return [(m["body"], m.get("more_body", False)) for m in self.messages[1:]]

    @property
    def body(self) -> bytes:
        assert self.bodies and self.bodies[-1][1] is False, "the response did not complete"
        return b"".join(body for body, _ in self.bodies)


def scope(method: str, target: str, headers: list[tuple[bytes, bytes]] | None = None, **extra: Any) -> dict[str, Any]:
    path, _, query = target.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver"), *(headers or [])],
        "client": CLIENT,
        "server": ("testserver", 80),
        **extra,
    }


async def call(app: TwistedSiteApp, request_scope: dict[str, Any], driver: Driver) -> Driver:
    await asyncio.wait_for(app(request_scope, driver.receive, driver.send), WAIT)
    return driver


def asgi_client(app: TwistedSiteApp, client: tuple[str, int] = CLIENT) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=client), base_url="http://testserver", timeout=WAIT)


def socket_client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=WAIT)


def header_names(response: httpx.Response) -> list[str]:
    return sorted(name for name in response.headers.keys() if name not in ("date", "server"))  # the server's own


def open_channels() -> list[Any]:
    """HTTPChannels on our transport that still hold a timeout: ones never told their connection was lost."""
    from twisted.internet import reactor

    found = []
    for call_ in reactor.getDelayedCalls():
        owner = getattr(call_.func, "__self__", None)
        if isinstance(owner, http.HTTPChannel) and isinstance(owner.transport, _Transport) and call_.active():
            found.append(owner)
    return found


# ---------------------------------------------------------------- the legacy service, both ways


@dataclass
class Legacy:
    service: LegacyService
    app: TwistedSiteApp
    url: str


@pytest.fixture(scope="module")
def legacy(warm_pool: SharedPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Legacy]:
    settings = LegacySettings(
        host="127.0.0.1", port=0, var_dir=tmp_path_factory.mktemp("legacy-var"), max_body_bytes=BODY_LIMIT, sync_enabled=False
    )
    service = LegacyService(warm_pool, settings)
    port = service.listen()  # the same Site on a socket, to compare with
    yield Legacy(service, TwistedSiteApp(service.site), f"http://127.0.0.1:{port}")
    pytest_twisted.blockon(service.stop())


async def both(legacy: Legacy, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, httpx.Response]:
    async with asgi_client(legacy.app) as in_process, socket_client(legacy.url) as over_tcp:
        return await in_process.request(method, path, **kwargs), await over_tcp.request(method, path, **kwargs)


@asyncio_test
async def test_status_is_served_as_on_the_socket(legacy: Legacy) -> None:
    mine, theirs = await both(legacy, "GET", "/status")
    assert (mine.status_code, mine.headers["content-type"]) == (theirs.status_code, theirs.headers["content-type"]) == (200, "application/json")
    assert header_names(mine) == header_names(theirs)
    assert "connection" not in mine.headers and "transfer-encoding" not in mine.headers
    assert mine.json()["service"] == "legacy" and mine.json().keys() == theirs.json().keys()
    # Date and Server are the ASGI server's to set: Twisted's copies would make two of each
    assert "date" in theirs.headers and theirs.headers["server"].startswith("TwistedWeb")
    assert "date" not in mine.headers and "server" not in mine.headers


@asyncio_test
async def test_json_post_is_served_as_on_the_socket(legacy: Legacy) -> None:
    text = "Docs at https://Docs.Example.com/x, mail ops@corp.example.org; again docs.example.com"
    mine, theirs = await both(legacy, "POST", "/v1/domains", json={"text": text})
    assert mine.status_code == theirs.status_code == 200, mine.text
    assert mine.json() == theirs.json() == {"domains": ["docs.example.com", "corp.example.org"], "count": 3}
    assert header_names(mine) == header_names(theirs)


@asyncio_test
async def test_multipart_upload_is_served_as_on_the_socket(legacy: Legacy) -> None:
    mine, theirs = await both(legacy, "POST", "/v1/faces", files={"file": ("a.png", ASTRONAUT_PNG, "image/png")})
    assert mine.status_code == theirs.status_code == 200, mine.text
    assert mine.json() == theirs.json() and mine.json()["faces"]


@asyncio_test
async def test_404_and_405_are_served_as_on_the_socket(legacy: Legacy) -> None:
    for method, path, status in [("GET", "/nope", 404), ("GET", "/v1/faces", 405), ("PUT", "/v1/jobs/abc", 405)]:
        mine, theirs = await both(legacy, method, path)
        assert mine.status_code == theirs.status_code == status
        assert mine.json() == theirs.json()
        assert mine.headers.get("allow") == theirs.headers.get("allow")
        assert header_names(mine) == header_names(theirs)
    assert mine.headers["allow"] == "DELETE, GET"


@asyncio_test
async def test_head_has_the_get_headers_and_no_body(legacy: Legacy) -> None:
    mine, theirs = await both(legacy, "HEAD", "/status")
    assert mine.status_code == theirs.status_code == 200
    assert mine.content == theirs.content == b""
    assert header_names(mine) == header_names(theirs)
    assert int(mine.headers["content-length"]) > 0  # the length the GET body would have


@asyncio_test
async def test_an_announced_oversized_body_gets_413_and_is_never_pulled(legacy: Legacy) -> None:
    piece = b"\0" * 65536
    chunks = [piece] * (BODY_LIMIT // len(piece) + 1)
    length = str(sum(map(len, chunks))).encode()
    headers = [(b"content-type", b"image/png"), (b"content-length", length)]
    # send yields to the loop (as a real server's does), so the app has every chance to pull meanwhile
    driver = await call(legacy.app, scope("POST", "/v1/faces", headers), Driver(chunks, send_delay=0.01))
    assert driver.status == 413
    assert json.loads(driver.body)["error"]["code"] == "body_too_large"
    assert driver.pulled == 0, "the body was fed to Twisted after it had refused it"
    assert (b"connection", b"close") in driver.headers  # the unread body makes the client connection unusable

    mine, theirs = await both(legacy, "POST", "/v1/faces", content=b"\0" * (BODY_LIMIT + 1), headers={"content-type": "image/png"})
    assert mine.status_code == theirs.status_code == 413
    assert mine.json() == theirs.json()


@asyncio_test
async def test_a_streamed_body_over_the_limit_gets_413_and_the_rest_is_not_pulled(legacy: Legacy) -> None:
    piece = b"\0" * 65536
    chunks = [piece] * (3 * BODY_LIMIT // len(piece))
    driver = await call(legacy.app, scope("POST", "/v1/faces", [(b"content-type", b"image/png")]), Driver(chunks))
    assert driver.status == 413
    assert json.loads(driver.body)["error"]["code"] == "body_too_large"
    # Twisted refuses on the chunk that passes the limit; nothing after it is pulled.
    assert driver.pulled == BODY_LIMIT // len(piece) + 1
    await until(lambda: not open_channels(), "the channel to be closed")

    async def streamed() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async with asgi_client(legacy.app) as in_process:
        response = await in_process.post("/v1/faces", content=streamed(), headers={"content-type": "image/png"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


@asyncio_test
async def test_a_client_that_hangs_up_cancels_legacys_work(legacy: Legacy, warm_pool: SharedPool) -> None:
    image = MANY_LINES_PNG
    before = warm_pool.stats().cancelled
    gone = asyncio.Event()
    driver = Driver([image], disconnect=gone)
    headers = [(b"content-type", b"image/png"), (b"content-length", str(len(image)).encode())]
    served = asyncio.ensure_future(call(legacy.app, scope("POST", "/v1/ocr", headers), driver))
    await until(lambda: warm_pool.stats().busy > 0, "the OCR call to start on the pool")
    gone.set()
    await served
    assert driver.messages == []
    await until(lambda: warm_pool.stats().cancelled > before, "legacy to cancel the OCR call")


# ---------------------------------------------------------------- small Resource trees for the edges


class Echo(resource.Resource):
    """Answers with what Twisted saw of the request."""

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        body = request.content.read()
        client, host = request.getClientAddress(), request.getHost()
        seen = {
            "method": request.method.decode(),
            "uri": request.uri.decode("latin-1"),
            "path": request.path.decode("latin-1"),
            "args": {k.decode("latin-1"): [v.decode("latin-1") for v in vs] for k, vs in request.args.items()},
            "multi": [v.decode("latin-1") for v in request.requestHeaders.getRawHeaders(b"x-multi", [])],
            "hop_by_hop": {
                name: request.requestHeaders.getRawHeaders(name.encode(), [b""])[0].decode()
                for name in ("connection", "keep-alive", "expect", "transfer-encoding", "content-length")
            },
            "client": [type(client).__name__, client.host, client.port],
            "host": [type(host).__name__, host.host, host.port],
            "secure": request.isSecure(),
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(seen).encode()


class ThreeWrites(resource.Resource):
    """Writes its body in three reactor turns, 20 ms apart."""

    isLeaf = True
    parts = [b"one ", b"two ", b"three"]

    def render_GET(self, request: server.Request) -> Any:
        from twisted.internet import reactor

        def step(i: int) -> None:
            request.write(self.parts[i])
            if i + 1 < len(self.parts):
                reactor.callLater(0.02, step, i + 1)
            else:
                request.finish()

        step(0)
        return server.NOT_DONE_YET


class Boom(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        raise ValueError("boom")


class HangUp(resource.Resource):
    """Hangs up without answering, or (``?partial=1``) in the middle of a Content-Length body."""

    isLeaf = True

    def render_GET(self, request: server.Request) -> Any:
        if b"partial" in request.args:
            request.setHeader(b"content-length", b"10")
            request.write(b"abc")
        request.transport.loseConnection()
        return server.NOT_DONE_YET


class LateFinish(resource.Resource):
    """Writes its whole Content-Length body at once and finishes 50 ms later."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.outcomes: list[Any] = []

    def render_GET(self, request: server.Request) -> Any:
        from twisted.internet import reactor

        request.setHeader(b"content-length", b"5")
        request.write(b"hello")
        request.notifyFinish().addBoth(self.outcomes.append)
        reactor.callLater(0.05, request.finish)
        return server.NOT_DONE_YET


@implementer(IPushProducer)
class Flood:
    """A push producer that writes ``total`` bytes, one piece per reactor turn, while it is not paused."""

    def __init__(self, request: server.Request, total: int, piece: int) -> None:
        from twisted.internet import reactor

        self.reactor, self.request, self.total, self.piece = reactor, request, total, piece
        self.sent = self.pauses = self.resumes = 0
        self.paused = self.stopped = False
        self.call: Any = None
        request.registerProducer(self, True)
        self._schedule()

    def _schedule(self) -> None:
        if self.call is None and not self.paused and not self.stopped:
            self.call = self.reactor.callLater(0, self._tick)

    def _tick(self) -> None:
        self.call = None
        if self.paused or self.stopped:
            return
        self.request.write(b"\xab" * self.piece)
        self.sent += self.piece
        if self.sent >= self.total:
            self.request.unregisterProducer()
            self.request.finish()
            return
        self._schedule()

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        self.resumes += 1
        self._schedule()

    def stopProducing(self) -> None:
        self.stopped = True


class FloodResource(resource.Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.producers: list[Flood] = []

    def render_GET(self, request: server.Request) -> Any:
        self.producers.append(Flood(request, total=2 * 1024 * 1024, piece=16 * 1024))
        return server.NOT_DONE_YET


class CountingRequest(server.Request):
    """Counts request body bytes as Twisted's parser hands them over."""

    def handleContentChunk(self, data: bytes) -> None:
        self.channel.site.received += len(data)
        super().handleContentChunk(data)


class CountingSite(server.Site):
    requestFactory = CountingRequest
    received = 0


@dataclass
class Edges:
    site: CountingSite
    app: TwistedSiteApp
    url: str
    hang: Hang
    flood: FloodResource
    late: LateFinish


@pytest.fixture(scope="module")
def edges() -> Iterator[Edges]:
    from twisted.internet import reactor

    root = resource.Resource()
    hang, flood, late = Hang(), FloodResource(), LateFinish()
    children = {b"echo": Echo(), b"three": ThreeWrites(), b"boom": Boom(), b"hang": hang, b"flood": flood,
                b"hangup": HangUp(), b"late": late}
    for name, child in children.items():
        root.putChild(name, child)
    site = CountingSite(root)
    site.displayTracebacks = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    yield Edges(site, TwistedSiteApp(site), f"http://127.0.0.1:{port.getHost().port}", hang, flood, late)
    pytest_twisted.blockon(port.stopListening())


async def both_edges(edges: Edges, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, httpx.Response]:
    async with asgi_client(edges.app) as in_process, socket_client(edges.url) as over_tcp:
        return await in_process.request(method, path, **kwargs), await over_tcp.request(method, path, **kwargs)


@asyncio_test
async def test_query_strings_and_percent_encoding_reach_twisted_as_on_the_socket(edges: Edges) -> None:
    target = "/echo/a%20b%2Fc%C3%A9?q=%C3%A9t%C3%A9&x=1&x=2&plus=a+b&amp=%26&empty="
    mine, theirs = await both_edges(edges, "GET", target)
    seen, over_tcp = mine.json(), theirs.json()
    assert seen["uri"] == over_tcp["uri"] == target
    assert seen["path"] == "/echo/a%20b%2Fc%C3%A9"
    assert seen["args"] == over_tcp["args"] == {"q": ["Ã©tÃ©"], "x": ["1", "2"], "plus": ["a b"], "amp": ["&"], "empty": [""]}


@asyncio_test
async def test_a_scope_without_raw_path_is_percent_encoded_again(edges: Edges) -> None:
    request_scope = scope("GET", "/echo/a b/é%", raw_path=None)
    driver = await call(edges.app, request_scope, Driver())
    assert json.loads(driver.body)["uri"] == "/echo/a%20b/%C3%A9%25"


@asyncio_test
async def test_a_head_twisted_would_hang_up_on_gets_431_in_the_error_shape_not_a_500(edges: Edges) -> None:
    limit = http.HTTPChannel.MAX_LENGTH  # twisted.web closes on a longer line, unanswered
    for headers in ([(b"x-big", b"a" * limit)], [(b"x-%d" % i, b"v") for i in range(600)]):
        driver = await call(edges.app, scope("GET", "/echo", headers), Driver())
        assert driver.status == 431, driver.messages
        assert json.loads(driver.body)["error"]["code"] == "header_too_large"
    long_target = "/echo?q=" + "a" * limit
    driver = await call(edges.app, scope("GET", long_target), Driver())
    assert driver.status == 431 and json.loads(driver.body)["error"]["code"] == "header_too_large"


@asyncio_test
async def test_the_lines_the_adapter_adds_do_not_push_a_head_past_twisteds_limit(edges: Edges) -> None:
    total = http.HTTPChannel.totalHeadersSize
    line = len(b"POST /echo HTTP/1.1") + len(b"host: testserver")
    headers = [(b"x-fill", b"v" * (total - line - len(b"x-fill: ")))]  # the client's head is at Twisted's limit exactly
    driver = await call(edges.app, scope("POST", "/echo", headers), Driver([b"abc"]))  # + Content-Length, Connection
    assert driver.status == 200, driver.messages
    assert json.loads(driver.body)["hop_by_hop"]["content-length"] == "3"


@asyncio_test
async def test_repeated_headers_reach_twisted_as_on_the_socket(edges: Edges) -> None:
    headers = [("x-multi", "1"), ("X-Multi", "two, three"), ("x-multi", "4")]
    mine, theirs = await both_edges(edges, "GET", "/echo", headers=headers)
    assert mine.json()["multi"] == theirs.json()["multi"] == ["1", "two, three", "4"]


@asyncio_test
async def test_twisted_gets_connection_close_and_no_other_hop_by_hop_headers(edges: Edges) -> None:
    headers = [(b"connection", b"keep-alive"), (b"keep-alive", b"timeout=5"), (b"expect", b"100-continue"),
               (b"content-length", b"3")]
    driver = await call(edges.app, scope("POST", "/echo", headers), Driver([b"abc"]))
    seen = json.loads(driver.body)
    assert seen["hop_by_hop"] == {"connection": "close", "keep-alive": "", "expect": "", "transfer-encoding": "",
                                  "content-length": "3"}
    assert seen["length"] == 3

    driver = await call(edges.app, scope("POST", "/echo", [(b"transfer-encoding", b"chunked")]), Driver([b"ab", b"c"]))
    seen = json.loads(driver.body)
    assert (seen["hop_by_hop"]["transfer-encoding"], seen["length"]) == ("chunked", 3)  # our framing, not the client's
    driver = await call(edges.app, scope("POST", "/echo", [(b"transfer-encoding", b"chunked")]), Driver([b"abc"]))
    assert json.loads(driver.body)["hop_by_hop"]["content-length"] == "3"  # a body that came whole is sent whole


@asyncio_test
async def test_twisteds_own_400_comes_through(edges: Edges) -> None:
    driver = await call(edges.app, scope("POST", "/echo", [(b"content-length", b"12abc")]), Driver([b"x"]))
    assert driver.status == 400 and driver.body == b""
    assert (b"connection", b"close") in driver.headers and driver.pulled == 0


@pytest.mark.parametrize(
    ("target", "message"),
    [("/hangup", "closed the connection without a response"), ("/hangup?partial=1", "in the middle of its response")],
)
@asyncio_test
async def test_twisted_hanging_up_without_a_complete_response_is_an_error(edges: Edges, target: str, message: str) -> None:
    with pytest.raises(IncompleteResponse, match=message):
        await call(edges.app, scope("GET", target), Driver())


@asyncio_test
async def test_a_response_is_complete_at_its_content_length_and_twisted_may_finish_later(edges: Edges) -> None:
    driver = await call(edges.app, scope("GET", "/late"), Driver())
    assert driver.bodies == [(b"hello", False)]
    assert edges.late.outcomes == []  # Twisted has not finished, and is not told the client left
    await until(lambda: bool(edges.late.outcomes), "Twisted to finish the request")
    assert edges.late.outcomes == [None]  # notifyFinish succeeded: finish() came through, not a lost connection
    await until(lambda: not open_channels(), "the channel to be closed")


@pytest.mark.parametrize(
    ("client", "scheme", "server", "expected_client", "expected_host", "secure"),
    [
        (("203.0.113.7", 43210), "http", ("198.51.100.2", 8080), ["IPv4Address", "203.0.113.7", 43210], ["IPv4Address", "198.51.100.2", 8080], False),
        (("2001:db8::5", 5555), "https", ("testserver", None), ["IPv6Address", "2001:db8::5", 5555], ["IPv4Address", "testserver", 443], True),
        (None, "http", None, ["IPv4Address", "0.0.0.0", 0], ["IPv4Address", "0.0.0.0", 0], False),
    ],
)
@asyncio_test
async def test_twisted_sees_the_asgi_client_server_and_scheme(
    edges: Edges, client: Any, scheme: str, server: Any, expected_client: list[Any], expected_host: list[Any], secure: bool
) -> None:
    driver = await call(edges.app, scope("GET", "/echo", client=client, scheme=scheme, server=server), Driver())
    seen = json.loads(driver.body)
    assert seen["client"] == expected_client
    assert seen["host"] == expected_host
    assert seen["secure"] is secure


@asyncio_test
async def test_a_response_written_in_three_turns_streams_as_three_messages(edges: Edges) -> None:
    driver = await call(edges.app, scope("GET", "/three"), Driver())
    assert driver.status == 200
    assert driver.bodies == [(b"one ", True), (b"two ", True), (b"three", False)]
    names = {name for name, _ in driver.headers}
    assert b"transfer-encoding" not in names and b"connection" not in names  # Twisted chunked it; we de-chunk


@asyncio_test
async def test_a_resource_that_raises_gets_twisteds_500(edges: Edges) -> None:
    mine, theirs = await both_edges(edges, "GET", "/boom")
    assert mine.status_code == theirs.status_code == 500
    assert mine.content == theirs.content and b"Processing Failed" in mine.content
    assert header_names(mine) == header_names(theirs)


@asyncio_test
async def test_a_disconnect_while_twisted_works_fires_notify_finish_with_connection_done(edges: Edges) -> None:
    gone = asyncio.Event()
    driver = Driver([b"payload"], disconnect=gone)
    served = asyncio.ensure_future(call(edges.app, scope("POST", "/hang", [(b"content-length", b"7")]), driver))
    await until(lambda: edges.hang.rendered == 1, "the request to reach the resource")
    assert edges.hang.finished == []
    gone.set()
    await served
    assert driver.messages == []
    [outcome] = edges.hang.finished
    assert isinstance(outcome, Failure) and outcome.check(ConnectionDone)


@asyncio_test
async def test_a_disconnect_mid_body_closes_the_channel_before_twisted_renders(edges: Edges) -> None:
    rendered = edges.hang.rendered
    gone = asyncio.Event()
    gone.set()  # the client hangs up right after its first chunk
    driver = Driver([b"x" * 1000], body_ends=False, disconnect=gone)
    await call(edges.app, scope("POST", "/hang"), driver)  # no content-length: streamed as chunked
    assert driver.messages == []
    assert edges.hang.rendered == rendered
    await until(lambda: not open_channels(), "the half-fed channel to be closed")


@asyncio_test
async def test_large_request_bodies_stream_into_twisted_chunk_by_chunk(edges: Edges) -> None:
    piece = 128 * 1024
    chunks = [bytes([i]) * piece for i in range(64)]  # 8 MiB
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    for headers in ([(b"content-length", str(piece * len(chunks)).encode())], []):
        edges.site.received = 0
        seen_at_pull: list[int] = []
        driver = Driver(chunks, on_pull=lambda _, seen=seen_at_pull: seen.append(edges.site.received))
        await call(edges.app, scope("POST", "/echo", headers), driver)
        echoed = json.loads(driver.body)
        assert (echoed["length"], echoed["sha256"]) == (piece * len(chunks), digest)
        # Every chunk reached Twisted's parser before the next was pulled: nothing is held back.
        assert seen_at_pull == [i * piece for i in range(len(chunks))]


@asyncio_test
async def test_a_slow_client_pauses_a_push_producer(edges: Edges) -> None:
    driver = await call(edges.app, scope("GET", "/flood"), Driver(send_delay=0.002))
    producer = edges.flood.producers[-1]
    assert driver.status == 200 and driver.body == b"\xab" * producer.total
    assert producer.pauses >= 1, "the producer was never paused while the client lagged"
    assert max(len(body) for body, _ in driver.bodies) <= HIGH_WATER + producer.piece
    # Every pause was undone, except one its very last piece may have caused: it unregisters right after
    # that write, as a producer does, and nobody resumes an unregistered producer (over TCP neither).
    # That the body completed at all shows each earlier pause was followed by a resume.
    assert producer.resumes == producer.pauses - int(producer.paused)


@asyncio_test
async def test_no_channel_outlives_its_request(edges: Edges, legacy: Legacy) -> None:
    await call(edges.app, scope("GET", "/echo"), Driver())
    await call(legacy.app, scope("GET", "/status"), Driver())
    await call(edges.app, scope("POST", "/echo", [(b"content-length", b"3")]), Driver([b"abc"]))
    await until(lambda: not open_channels(), "every channel to be closed")


# ---------------------------------------------------------------- lifespan, websocket, threading


@asyncio_test
async def test_lifespan_starts_and_stops_the_site_like_a_port() -> None:
    site = server.Site(resource.Resource())
    app = TwistedSiteApp(site)
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    for message in ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}):
        inbox.put_nowait(message)
    sent: list[tuple[str, int]] = []

    async def send(message: Message) -> None:
        sent.append((message["type"], site.numPorts))

    await asyncio.wait_for(app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send), WAIT)
    assert sent == [("lifespan.startup.complete", 1), ("lifespan.shutdown.complete", 0)]
    assert site._logDateTimeCall is None  # stopFactory ran: no timer left behind


@asyncio_test
async def test_websockets_are_refused(edges: Edges) -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await edges.app({"type": "websocket", "path": "/echo", "headers": []}, receive, send)
    assert [m["type"] for m in sent] == ["websocket.close"]


@asyncio_test
async def test_it_refuses_a_loop_the_reactor_does_not_run_on(edges: Edges) -> None:
    def elsewhere() -> None:
        asyncio.run(edges.app(scope("GET", "/echo"), Driver().receive, Driver().send))

    with pytest.raises(RuntimeError, match="asyncio reactor must be installed on this loop"):
        await in_daemon_thread(elsewhere)
    assert not open_channels()
