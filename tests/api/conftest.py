"""Both stacks as real servers on ephemeral loopback ports, sharing the session's warm pool.

``service_url`` is parametrised over legacy and modern: every test in this
folder is the contract, run against both implementations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
import uvicorn

from bridge import SharedPool, as_deferred
from legacy import LegacyService, LegacySettings
from modern import ModernSettings, create_app
from tests.conftest import until

BODY_LIMIT = 1024 * 1024


def start_legacy(pool: SharedPool, var_dir: Path, **overrides: object) -> tuple[LegacyService, str]:
    options: dict[str, object] = {"max_body_bytes": BODY_LIMIT, "sync_enabled": False, **overrides}
    settings = LegacySettings(host="127.0.0.1", port=0, var_dir=var_dir, **options)  # type: ignore[arg-type]
    service = LegacyService(pool, settings)
    port = service.listen()
    service.startService()
    return service, f"http://127.0.0.1:{port}"


class ModernServer:
    """uvicorn serving ``modern.create_app`` on this loop, as ``cutover serve --only modern`` does."""

    def __init__(self, pool: SharedPool, var_dir: Path, **overrides: object) -> None:
        options: dict[str, object] = {"max_body_bytes": BODY_LIMIT, "sync_enabled": False, **overrides}
        self.settings = ModernSettings(host="127.0.0.1", port=0, var_dir=var_dir, **options)  # type: ignore[arg-type]
        self.app = create_app(self.settings, pool=pool)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
        self.server = uvicorn.Server(config)
        self.url = ""

    async def start(self) -> str:
        self.serving = asyncio.ensure_future(self.server.serve())
        await until(lambda: self.server.started or self.serving.done(), "uvicorn to start")
        if self.serving.done():
            self.serving.result()  # raises what stopped it
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.serving


@pytest.fixture(scope="module", params=["legacy", "modern"])
def service_url(request: pytest.FixtureRequest, warm_pool: SharedPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    var_dir = tmp_path_factory.mktemp(f"{request.param}-var")
    if request.param == "legacy":
        service, url = start_legacy(warm_pool, var_dir)
        yield url
        pytest_twisted.blockon(service.stop())
    else:
        server = ModernServer(warm_pool, var_dir)
        url = pytest_twisted.blockon(as_deferred(server.start()))
        yield url
        pytest_twisted.blockon(as_deferred(server.stop()))


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> str:
    """The name of the stack ``service_url`` serves in this test."""
    return str(request.node.callspec.params["service_url"])
