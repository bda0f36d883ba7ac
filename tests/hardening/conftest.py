"""Two co-hosted services, as ``cutover serve`` runs them: one plan sends every route to legacy, the other to modern.

Hostile input goes in through the front door (uvicorn, the plan, the body
guard) of one or the other, so each case runs against both stacks with the
shipped apps and their shipped settings (20 MiB body limit). The hosts share
the session's warm pool and live for the session: starting them is the
expensive part. Slow-client timeouts are lowered here so the tests stay fast;
the defaults are in :mod:`bridge.asgi`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_twisted
import uvicorn

from bridge import SharedPool, as_deferred
from bridge.asgi import httptools_protocol
from bridge.host.runtime import Host, HostSettings
from tests.conftest import WAIT, until
from tests.cutover.conftest import TOKEN

STACKS = ("legacy", "modern")
ROUTES = (
    "GET /status", "POST /v1/faces", "POST /v1/ocr", "POST /v1/audio/analyze", "POST /v1/domains",
    "POST /v1/jobs", "GET /v1/jobs", "GET /v1/jobs/{job_id}", "DELETE /v1/jobs/{job_id}",
)
BODY_LIMIT = 20 * 1024 * 1024  # what both apps ship with (LegacySettings / ModernSettings)
BODY_TIMEOUT = 1.0  # the front door's slow-body timeout, lowered from 30 s
HEADER_TIMEOUT = 1.0  # the request-head timeout, lowered from 20 s
MAX_BODY_TIMEOUT = 2.0  # the cap on a body however fast it arrives, lowered from 300 s


def plan_for(stack: str) -> str:
    routes = "\n".join(f'"{route}" = "{stack}"' for route in ROUTES)
    apps = '[apps]\nlegacy = "legacy.service:cohost"\nmodern = "modern.app:cohost"\n\n'
    return f"{apps}[routes]\n{routes}\n\n[tasks]\ndata_sync = \"{stack}\"\n"


@dataclass
class Door:
    """One running co-hosted service whose plan sends everything to ``stack``."""

    stack: str
    host: Host
    server: uvicorn.Server
    serving: asyncio.Future[None]
    url: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


async def open_door(pool: SharedPool, directory: Path, stack: str) -> Door:
    directory.mkdir(parents=True, exist_ok=True)
    plan_path = directory / "cutover.toml"
    plan_path.write_text(textwrap.dedent(plan_for(stack)))
    var_dir = directory / "var"
    settings = HostSettings(plan_path=plan_path, port=0, var_dir=var_dir, admin_token=TOKEN)
    host = Host(settings, pool=pool)
    config = uvicorn.Config(
        host.asgi(), host="127.0.0.1", port=0, lifespan="on", log_level="warning", http=httptools_protocol(HEADER_TIMEOUT)
    )
    server = uvicorn.Server(config)
    previous = os.environ.get("CUTOVER_VAR")
    os.environ["CUTOVER_VAR"] = str(var_dir)  # the shipped app factories keep their state under $CUTOVER_VAR
    try:
        serving = asyncio.ensure_future(server.serve())
        await until(lambda: server.started or serving.done(), f"the {stack} front door to start")
    finally:
        if previous is None:
            os.environ.pop("CUTOVER_VAR", None)
        else:
            os.environ["CUTOVER_VAR"] = previous
    if serving.done():
        serving.result()
    assert host.frontdoor is not None
    host.frontdoor.body_timeout = BODY_TIMEOUT
    host.frontdoor.max_body_timeout = MAX_BODY_TIMEOUT
    port = server.servers[0].sockets[0].getsockname()[1]
    return Door(stack, host, server, serving, f"http://127.0.0.1:{port}")


async def close_door(door: Door) -> None:
    door.server.should_exit = True
    await door.serving


@contextlib.contextmanager
def patient(door: Door) -> Iterator[None]:
    """The shipped-like body timeouts for a test about something else (a body's size): on a loaded
    machine a 20 MiB body through legacy can take longer than the lowered 2 s cap, and a 413 became a 408."""
    frontdoor = door.host.frontdoor
    assert frontdoor is not None
    frontdoor.body_timeout, frontdoor.max_body_timeout = WAIT, WAIT
    try:
        yield
    finally:
        frontdoor.body_timeout, frontdoor.max_body_timeout = BODY_TIMEOUT, MAX_BODY_TIMEOUT


@pytest.fixture(scope="session")
def doors(warm_pool: SharedPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Door]]:
    base = tmp_path_factory.mktemp("hardening")
    opened: dict[str, Door] = {}
    try:
        for stack in STACKS:
            opened[stack] = pytest_twisted.blockon(as_deferred(open_door(warm_pool, base / stack, stack)))
        yield opened
    finally:
        for door in opened.values():
            pytest_twisted.blockon(as_deferred(close_door(door)))


@pytest.fixture(params=STACKS)
def door(request: pytest.FixtureRequest, doors: dict[str, Door]) -> Door:
    """The front door of one stack; tests using it run once per stack."""
    return doors[request.param]
