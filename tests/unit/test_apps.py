"""What ``[apps]`` may name: every shape of legacy and modern app, loaded from real modules."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.web.server import Site

from bridge.errors import AppLoadError
from bridge.host.apps import add_app_dir, asgi_routes, klein_routes, load_legacy, load_modern
from bridge.testing import asyncio_test

MODULE = '''
from contextlib import asynccontextmanager

from klein import Klein
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from twisted.application.service import Service
from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import Site

klein_app = Klein()


@klein_app.route("/items/<name>", methods=["GET", "PUT"])
def item(request, name):
    return name


@klein_app.route("/count/<int:n>")
def count(request, n):
    return str(n)


@klein_app.route("/static/", branch=True)
def static(request):
    return "file"


root = Resource()
site = Site(root)


class Holder(Service):
    def __init__(self):
        self.site = site
        self.events = []

    def startService(self):
        super().startService()
        self.events.append("start")

    def stopService(self):
        super().stopService()
        self.events.append("stop")
        return defer.succeed(None)


def factory(pool):
    return {"pool": pool, "resource": root}["resource"]


async def async_factory():
    return klein_app


def deferred_factory(pool):
    return defer.succeed(root)


async def ok(request):
    return JSONResponse({"state": request.state.answer})


@asynccontextmanager
async def lifespan(app):
    yield {"answer": 42}


star = Starlette(routes=[Route("/a/{id:int}", ok, methods=["GET", "POST"]),
                         Mount("/sub", routes=[Route("/b", ok)])], lifespan=lifespan)


async def bare(scope, receive, send):
    if scope["type"] == "lifespan":
        raise RuntimeError("no lifespan here")
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


class Callable:
    async def __call__(self, scope, receive, send):
        await bare(scope, receive, send)


instance = Callable()


def make_star(pool):
    return star


def not_an_app(pool):
    return 42
'''


@pytest.fixture
def team(tmp_path: Path) -> Iterator[str]:
    package = tmp_path / "teamapps"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text(textwrap.dedent(MODULE))
    before = list(sys.path)
    add_app_dir(tmp_path)
    try:
        yield "teamapps.mod"
    finally:
        sys.path[:] = before
        for name in [n for n in sys.modules if n.startswith("teamapps")]:
            del sys.modules[name]


@pytest.mark.parametrize("attr", ["site", "root", "klein_app", "Holder", "factory", "async_factory", "deferred_factory"])
@asyncio_test
async def test_every_legacy_shape_gives_a_site(team: str, attr: str) -> None:
    loaded = await load_legacy(f"{team}:{attr}", pool="the pool")
    assert isinstance(loaded.site, Site)
    if attr in ("klein_app", "async_factory"):
        # branch=True: the branch root is a route; its sub-paths (a path converter) are not one segment
        assert loaded.routes == [("GET", "/count/{n}"), ("GET", "/items/{name}"), ("GET", "/static/"), ("PUT", "/items/{name}")]
    else:
        assert loaded.routes is None  # a resource tree cannot be listed
    if attr == "Holder":
        loaded.start()
        await loaded.stop()
        assert loaded.obj.events == ["start", "stop"]


@pytest.mark.parametrize(("target", "message"), [
    ("teamapps.mod:star.routes", "is not a twisted.web Site"),
    ("teamapps.mod:nothing", "has no attribute 'nothing'"),
    ("teamapps.nope:x", "no module named 'teamapps.nope'"),
    ("teamapps.mod", "an import string is"),
])
@asyncio_test
async def test_a_legacy_that_cannot_be_served_is_one_clear_line(team: str, target: str, message: str) -> None:
    with pytest.raises(AppLoadError) as caught:
        await load_legacy(target, pool=None)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("attr", ["star", "make_star", "bare", "instance"])
@asyncio_test
async def test_every_modern_shape_is_served_with_its_lifespan(team: str, attr: str) -> None:
    loaded = await load_modern(f"{team}:{attr}", pool=None)
    await loaded.start()
    try:
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/a/7", "raw_path": b"/a/7", "query_string": b"",
                 "headers": [], "http_version": "1.1", "scheme": "http", "root_path": "",
                 "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}
        await loaded(scope, receive, send)
        if attr in ("star", "make_star"):
            assert sent[0]["status"] == 200 and sent[1]["body"] == b'{"state":42}'  # the lifespan's state reached it
            assert loaded.routes == [("GET", "/a/{id}"), ("GET", "/sub/b"), ("POST", "/a/{id}")]
        else:
            assert sent[0]["status"] == 204 and loaded.routes is None
    finally:
        await loaded.stop()


@asyncio_test
async def test_a_factory_that_returns_no_asgi_app_is_refused(team: str) -> None:
    with pytest.raises(AppLoadError, match="the factory returned int, which is not an ASGI app"):
        await load_modern(f"{team}:not_an_app", pool=None)


def test_route_listing_helpers_need_no_loading(team: str) -> None:
    import importlib

    mod = importlib.import_module(team)
    assert ("GET", "/count/{n}") in klein_routes(mod.klein_app)
    assert asgi_routes(object()) is None
