"""A real PostgreSQL server per session, and a fresh database per test.

The server comes from the installed binaries (tests/pgserver.py). Where they
are missing the tests are skipped with the reason; ``.ci/run`` installs them,
and sets ``CUTOVER_REQUIRE_POSTGRES=1`` so that CI fails instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.pgserver import PostgresServer, find_binaries


def _binaries_or_skip() -> object:
    found = find_binaries()
    if found is None:
        if os.environ.get("CUTOVER_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL's initdb/pg_ctl are not installed, and CUTOVER_REQUIRE_POSTGRES is set")
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed (Debian: apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'twisted-cutover[postgres]')")
    return found


def _running_server() -> Iterator[PostgresServer]:
    server = PostgresServer.create(_binaries_or_skip())  # type: ignore[arg-type]
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    yield from _running_server()


def create_database(server: PostgresServer) -> str:
    """A new empty database on ``server``; returns its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """An empty database of its own for each test, on the session's server."""
    return create_database(pg_server)


@pytest.fixture
def own_pg_server() -> Iterator[PostgresServer]:
    """A server of the test's own, for tests that stop or restart it."""
    yield from _running_server()
