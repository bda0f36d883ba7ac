"""Legacy raising inside a request while its route is shadowed: the client gets exactly what
legacy alone would have answered, the shadow records the difference, nothing crashes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import Request as FastAPIRequest
from fastapi.routing import APIRoute
from twisted.internet import defer
from twisted.web.server import Request

from bridge.testing import asyncio_test
from legacy.resources import Domains
from tests.conftest import until
from tests.cutover.conftest import Running
from tests.reliability import record

ROUTE = "POST /v1/domains"


class RaisesInRender(Domains):
    """A legacy bug before any Deferred: twisted.web itself turns it into its 500 page."""

    def render_POST(self, request: Request) -> Any:
        raise RuntimeError("legacy bug in render")


class RaisesInDeferred(Domains):
    """A legacy bug after a yield: the service's own error path answers 500 internal_error."""

    @defer.inlineCallbacks
    def handle(self, request: Request) -> Any:
        yield defer.succeed(None)
        raise RuntimeError("legacy bug in a callback")


def plant_legacy(run: Running, resource: Domains) -> None:
    v1 = run.host.legacy.site.resource.children[b"v1"]
    v1.putChild(b"domains", resource)


def plant_modern_bug(run: Running) -> None:
    async def explodes(request: FastAPIRequest) -> None:
        raise RuntimeError("modern bug")

    run.host.modern.router.routes.insert(0, APIRoute("/v1/domains", explodes, methods=["POST"]))


async def set_mode(run: Running, mode: str) -> None:
    response = await run.admin.post("/_cutover/api/routes", json={"method": "POST", "template": "/v1/domains", "mode": mode})
    assert response.status_code == 200, response.text


def answer(response: httpx.Response) -> tuple[int, str, bytes, str]:
    return response.status_code, response.headers.get("content-type", ""), response.content, response.headers["x-served-by"]


@pytest.mark.parametrize("fault", [RaisesInRender, RaisesInDeferred])
@pytest.mark.parametrize("modern_raises", [False, True], ids=["modern-ok", "modern-raises"])
@asyncio_test
async def test_legacy_raising_while_shadowed_still_answers_with_legacys_answer(
    cohost: Running, fault: type[Domains], modern_raises: bool
) -> None:
    legacy = cohost.host.legacy
    original = legacy.site.resource.children[b"v1"].children[b"domains"]
    plant_legacy(cohost, fault(legacy.pool, legacy.settings))
    if modern_raises:
        plant_modern_bug(cohost)
    body = {"text": "see fault.example.com"}
    alone = await cohost.http.post("/v1/domains", json=body)  # the plan leaves it on legacy: legacy alone
    assert alone.status_code == 500 and alone.headers["x-served-by"] == "legacy"

    await set_mode(cohost, "shadow")
    shadowed = await cohost.http.post("/v1/domains", json=body)
    assert answer(shadowed) == answer(alone)  # byte for byte what legacy says, whatever modern did
    await until(lambda: cohost.host.recorder.stats().get(ROUTE, {}).get("compared") == 1, "the shadow comparison")
    counts = cohost.host.recorder.stats()[ROUTE]
    assert counts["different"] == 1 and counts["errors"] == int(modern_raises)
    [stored] = (await cohost.admin.get("/_cutover/api/mismatches", params={"route": ROUTE})).json()["mismatches"]
    detail = (await cohost.admin.get(f"/_cutover/api/mismatches/{stored['id']}")).json()
    assert detail["legacy"]["status"] == 500
    assert detail["modern"]["status"] == (599 if modern_raises else 200)

    # the host is unharmed: with legacy fixed, the same shadowed route answers and compares equal
    plant_legacy(cohost, original)
    if modern_raises:
        cohost.host.modern.router.routes.pop(0)
    healed = await cohost.http.post("/v1/domains", json=body)
    assert healed.status_code == 200 and healed.json() == {"domains": ["fault.example.com"], "count": 1}
    await until(lambda: cohost.host.recorder.stats()[ROUTE]["compared"] == 2, "the second comparison")
    assert cohost.host.recorder.stats()[ROUTE]["equal"] == 1
    record("faults", f"legacy raises ({fault.__name__}) while shadowed, modern {'raises' if modern_raises else 'ok'}",
           1, int(answer(shadowed) == answer(alone)),
           f"client got legacy's {shadowed.status_code} {shadowed.headers.get('content-type', '').split(';')[0]}; diff stored")
