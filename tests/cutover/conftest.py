"""The co-hosted service as `cutover serve` runs it: uvicorn, the front door, both stacks, one loop, one pool."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from bridge import SharedPool
from bridge.host.runtime import Host, HostSettings
from bridge.testing import asyncio_fixture
from tests.conftest import WAIT, until

TOKEN = "s3cret-admin-token"
PLAN = """
[apps]
legacy = "legacy.service:cohost"
modern = "modern.app:cohost"

[routes]
"GET /status" = "modern"
"POST /v1/faces" = "legacy"
"POST /v1/ocr" = "legacy"
"POST /v1/audio/analyze" = "legacy"
"POST /v1/domains" = { mode = "legacy", shadow_safe = true }
"POST /v1/jobs" = "legacy"
"GET /v1/jobs/{job_id}" = "legacy"
"DELETE /v1/jobs/{job_id}" = "legacy"

[canary]
sticky_header = "X-Cutover-Key"

[tasks]
data_sync = "legacy"
"""


@dataclass
class Running:
    host: Host
    http: httpx.AsyncClient
    admin: httpx.AsyncClient
    plan_path: Path


async def start_host(pool: SharedPool, tmp_path: Path, plan: str = PLAN, **overrides: object) -> tuple[Host, uvicorn.Server, asyncio.Future[None], str]:
    plan_path = tmp_path / "cutover.toml"
    plan_path.write_text(textwrap.dedent(plan))
    settings = HostSettings(plan_path=plan_path, port=0, var_dir=tmp_path / "var", admin_token=TOKEN, **overrides)  # type: ignore[arg-type]
    host = Host(settings, pool=pool)
    server = uvicorn.Server(uvicorn.Config(host.asgi(), host="127.0.0.1", port=0, lifespan="on", log_level="warning"))
    serving = asyncio.ensure_future(server.serve())
    await until(lambda: server.started or serving.done(), "the co-hosted service to start")
    if serving.done():
        serving.result()
    port = server.servers[0].sockets[0].getsockname()[1]
    return host, server, serving, f"http://127.0.0.1:{port}"


@pytest.fixture
@asyncio_fixture
async def cohost(warm_pool: SharedPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    async with serving_plan(warm_pool, tmp_path, monkeypatch, PLAN) as running:
        yield running


@contextlib.asynccontextmanager
async def serving_plan(pool: SharedPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plan: str) -> AsyncIterator[Running]:
    """The co-hosted service on ``plan``, with a client and an admin client, until the block ends."""
    monkeypatch.setenv("CUTOVER_VAR", str(tmp_path / "var"))
    host, server, serving, url = await start_host(pool, tmp_path, plan)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=WAIT) as http, httpx.AsyncClient(
            base_url=url, timeout=WAIT, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as admin:
            yield Running(host, http, admin, tmp_path / "cutover.toml")
    finally:
        server.should_exit = True
        await serving
