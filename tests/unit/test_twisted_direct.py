"""TwistedSiteApp's lean path (a Request built from the parsed head) against its byte path (a real HTTPChannel).

A ``server.Site`` takes the lean path; the same Site with its own
``buildProtocol`` keeps the byte path, so each request here is answered both
ways by the same resources and the answers must be the same: status, headers,
body, and what Twisted saw of the request. Also: which Sites take which path,
``static.File`` (Range, and a large file streamed in bounded pieces through
its pull producer), and legacy's ``LimitedSite`` refusing a body before it is
read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.web import resource, server, static

from bridge.testing import asyncio_test
from bridge.twisted_asgi import HIGH_WATER, TwistedSiteApp
from bridge.twisted_request import serves_directly
from legacy.request import LimitedSite
from tests.conftest import WAIT
from tests.unit.test_twisted_asgi import Boom, Driver, ThreeWrites, scope

FILE_BYTES = bytes(range(256)) * 1200  # 300 KiB: several of static.File's 64 KiB reads
BODY_LIMIT = 1000


def answer(driver: Driver) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, sorted headers and whole body of a completed response."""
    return driver.status, sorted(driver.headers), driver.body


class Echo(resource.Resource):
    """What Twisted saw of the request."""

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        body = request.content.read()
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-padded", b"  spaced  ")
        return json.dumps({
            "method": request.method.decode(), "uri": request.uri.decode("latin-1"),
            "args": {k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()},
            "headers": sorted([k.decode(), v.decode()] for k, vs in request.requestHeaders.getAllRawHeaders() for v in vs),
            "cookies": {k.decode(): v.decode() for k, v in request.received_cookies.items()},
            "body": hashlib.sha256(body).hexdigest(), "length": len(body),
        }).encode()


class ByteSite(server.Site):
    """The same Site, with a ``buildProtocol`` of its own: it keeps the byte path."""

    def buildProtocol(self, addr: Any) -> Any:
        return super().buildProtocol(addr)


class ByteLimitedSite(LimitedSite):
    def buildProtocol(self, addr: Any) -> Any:
        return super().buildProtocol(addr)


@dataclass
class Pair:
    direct: TwistedSiteApp
    byte: TwistedSiteApp
    big: Path


def _tree(folder: Path) -> resource.Resource:
    root = resource.Resource()
    (folder / "data.bin").write_bytes(FILE_BYTES)
    big = folder / "big.bin"
    big.write_bytes(hashlib.sha256(b"seed").digest() * (8 * 1024 * 1024 // 32))  # 8 MiB
    for name, child in {b"echo": Echo(), b"three": ThreeWrites(), b"boom": Boom(),
                        b"files": static.File(str(folder))}.items():
        root.putChild(name, child)
    return root


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    folder = tmp_path_factory.mktemp("files")
    root = _tree(folder)
    direct, byte = server.Site(root), ByteSite(root)
    for site in (direct, byte):
        site.displayTracebacks = False
    yield Pair(TwistedSiteApp(direct), TwistedSiteApp(byte), folder / "big.bin")


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    folder = tmp_path_factory.mktemp("limited")
    root = _tree(folder)
    yield Pair(TwistedSiteApp(LimitedSite(root, BODY_LIMIT)), TwistedSiteApp(ByteLimitedSite(root, BODY_LIMIT)),
               folder / "big.bin")


async def both(pair: Pair, method: str, target: str, headers: list[tuple[bytes, bytes]] | None = None,
               chunks: list[bytes] | None = None) -> tuple[tuple[Any, ...], tuple[Any, ...], Driver, Driver]:
    results = []
    for app in (pair.direct, pair.byte):
        driver = Driver(list(chunks or []))
        await asyncio.wait_for(app(scope(method, target, headers), driver.receive, driver.send), WAIT)
        results.append(driver)
    lean, byte = results
    return answer(lean), answer(byte), lean, byte


def test_which_sites_take_the_lean_path(tmp_path: Path) -> None:
    root = resource.Resource()

    class OwnChannel(server.Site):
        pass

    own_channel = OwnChannel(root)
    own_channel.protocol = lambda: None  # type: ignore[assignment, method-assign, misc]
    not_a_request = server.Site(root)
    not_a_request.requestFactory = lambda channel, queued=None: None  # type: ignore[assignment]
    assert serves_directly(server.Site(root)) and serves_directly(LimitedSite(root, 10))
    assert not serves_directly(ByteSite(root)) and not serves_directly(own_channel)
    assert not serves_directly(not_a_request) and not serves_directly(object())


@pytest.mark.parametrize(("method", "target", "headers", "chunks"), [
    ("GET", "/echo/a%20b?x=1&x=2&e=", [(b"x-multi", b"1"), (b"X-Multi", b"2"), (b"cookie", b"a=1; b=2")], None),
    ("POST", "/echo", [(b"content-length", b"5"), (b"content-type", b"application/octet-stream")], [b"he", b"llo"]),
    ("POST", "/echo", [(b"transfer-encoding", b"chunked")], [b"ab", b"", b"c"]),  # streamed: chunked to Twisted
    ("POST", "/echo", [(b"content-length", b"3")], [b"abcdef"]),  # more than announced: Twisted reads 3
    ("POST", "/echo", [(b"content-type", b"application/x-www-form-urlencoded")], [b"q=1&r=2"]),
    ("HEAD", "/echo", None, None),
    ("GET", "/missing", None, None),
    ("GET", "/boom", None, None),
    ("GET", "/three", None, None),
    ("GET", "/files/data.bin", None, None),
    ("HEAD", "/files/data.bin", None, None),
    ("GET", "/files/data.bin", [(b"range", b"bytes=1000-70999")], None),
    ("GET", "/files/data.bin", [(b"range", b"bytes=-10")], None),
    ("GET", "/files/data.bin", [(b"range", b"bytes=0-1,10-11")], None),  # multipart/byteranges
    ("GET", "/files/data.bin", [(b"range", b"bytes=999999-")], None),  # 416
    ("GET", "/files/", None, None),  # the directory listing
])
@asyncio_test
async def test_both_paths_give_the_same_answer(pair: Pair, method: str, target: str,
                                               headers: list[tuple[bytes, bytes]] | None,
                                               chunks: list[bytes] | None) -> None:
    lean, byte, _, _ = await both(pair, method, target, headers, chunks)
    if b"multipart/byteranges" in dict(lean[1]).get(b"content-type", b""):
        # The part boundary is random per response: compare everything else.
        boundary = dict(lean[1])[b"content-type"].partition(b"boundary=")[2].strip(b'"')
        other = dict(byte[1])[b"content-type"].partition(b"boundary=")[2].strip(b'"')
        byte = (byte[0], sorted((k, v.replace(other, boundary)) for k, v in byte[1]), byte[2].replace(other, boundary))
    assert lean == byte
    assert lean[0] != 500 or target == "/boom"


@asyncio_test
async def test_a_range_request_gets_exactly_its_bytes(pair: Pair) -> None:
    (status, headers, body), _, _, _ = await both(pair, "GET", "/files/data.bin", [(b"range", b"bytes=1000-70999")])
    assert status == 206 and body == FILE_BYTES[1000:71000]
    assert dict(headers)[b"content-range"] == b"bytes 1000-70999/%d" % len(FILE_BYTES)


@asyncio_test
async def test_a_large_file_streams_in_bounded_pieces_to_a_slow_client(pair: Pair) -> None:
    driver = Driver(send_delay=0.001)
    await asyncio.wait_for(pair.direct(scope("GET", "/files/big.bin"), driver.receive, driver.send), WAIT)
    status, _, body = answer(driver)
    assert status == 200 and body == pair.big.read_bytes()
    pieces = [len(m.get("body", b"")) for m in driver.messages[1:]]
    assert len(pieces) > 8 and max(pieces) <= HIGH_WATER + 64 * 1024  # never the whole file at once


@asyncio_test
async def test_limited_site_refuses_an_announced_body_before_reading_it_on_both_paths(limited: Pair) -> None:
    lean, byte, lean_driver, byte_driver = await both(limited, "POST", "/echo",
                                                      [(b"content-length", b"%d" % (BODY_LIMIT + 1))], [b"x"])
    assert lean == byte and lean[0] == 413
    assert json.loads(lean[2])["error"]["code"] == "body_too_large"
    assert (b"connection", b"close") in lean[1]
    assert lean_driver.pulled == byte_driver.pulled == 0


@asyncio_test
async def test_limited_site_cuts_a_streamed_body_at_its_limit_on_both_paths(limited: Pair) -> None:
    chunks = [b"y" * 400] * 10  # 4,000 bytes, no Content-Length, past the 1,000-byte limit on the third
    lean, byte, lean_driver, byte_driver = await both(limited, "POST", "/echo", [(b"transfer-encoding", b"chunked")],
                                                      chunks)
    assert lean == byte and lean[0] == 413
    assert lean_driver.pulled == byte_driver.pulled == 3  # nothing pulled after the refusal
