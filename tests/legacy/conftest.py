"""A real legacy server on an ephemeral loopback port, on the test loop, with a real shared pool."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted

from bridge import SharedPool
from legacy import LegacyService, LegacySettings

BODY_LIMIT = 1024 * 1024


def start_legacy(pool: SharedPool, var_dir: Path, **overrides: object) -> tuple[LegacyService, str]:
    options: dict[str, object] = {"max_body_bytes": BODY_LIMIT, "sync_enabled": False, **overrides}
    settings = LegacySettings(host="127.0.0.1", port=0, var_dir=var_dir, **options)  # type: ignore[arg-type]
    service = LegacyService(pool, settings)
    port = service.listen()
    service.start_tasks()
    return service, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def legacy_url(warm_pool: SharedPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    service, url = start_legacy(warm_pool, tmp_path_factory.mktemp("legacy-var"))
    yield url
    pytest_twisted.blockon(service.stop())
