"""The parity plugin pointed at our own two stacks, started in-process on loopback.

A team with its services already running passes ``--parity-legacy-url`` and
``--parity-modern-url`` (or the CUTOVER_PARITY_* variables) and needs none of
this: ``parity_urls`` then returns those URLs and nothing is started here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted

from bridge import SharedPool, as_deferred

PLUGIN = "bridge.parity.plugin"


def pytest_configure(config: pytest.Config) -> None:
    # `pytest_plugins = [PLUGIN]` belongs in a top-level conftest (pytest refuses it in a
    # nested one), and tests/conftest.py is not ours to change: register it from here.
    # `cutover parity` passes `-p bridge.parity.plugin` so its options are on the command line.
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)


@pytest.fixture(scope="module")
def parity_urls(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Both stacks on ephemeral ports, sharing the session's warm pool, for one test module."""
    from bridge.parity.plugin import configured_urls  # imported once registered, so pytest can rewrite its asserts

    given = configured_urls(request.config)
    if given is not None:
        yield given
        return
    warm_pool: SharedPool = request.getfixturevalue("warm_pool")  # only when we start the stacks ourselves
    from tests.api.conftest import ModernServer, start_legacy  # the apps, imported only when we start them

    legacy, legacy_url = start_legacy(warm_pool, Path(tmp_path_factory.mktemp("parity-legacy-var")))
    modern = ModernServer(warm_pool, Path(tmp_path_factory.mktemp("parity-modern-var")))
    try:
        modern_url = pytest_twisted.blockon(as_deferred(modern.start()))
    except BaseException:
        pytest_twisted.blockon(legacy.stop())
        raise
    try:
        yield {"legacy": legacy_url, "modern": modern_url}
    finally:
        pytest_twisted.blockon(as_deferred(modern.stop()))
        pytest_twisted.blockon(legacy.stop())
