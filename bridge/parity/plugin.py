"""A pytest plugin: point the same tests at two running implementations of one HTTP contract.

It is registered as a ``pytest11`` entry point named ``bridge.parity.plugin``,
so installing the toolkit makes its fixtures available; naming it in a
conftest (``pytest_plugins = ["bridge.parity.plugin"]``) or with ``-p
bridge.parity.plugin`` is harmless. It does nothing until a test uses its
fixtures.

Bare ``async def`` tests and fixtures work with no other plugin: a test that
uses ``assert_same``, ``service`` or ``parity_urls`` and is an ``async def``
(with no ``asyncio``/``anyio``/``trio`` marker of its own) runs on a loop the
plugin keeps for the session, and so do the ``async def`` fixtures no other
plugin handles. Under pytest-twisted on the asyncio reactor they run as
asyncio Tasks on the reactor's loop instead. Name the two running
services with ``--parity-legacy-url`` / ``--parity-modern-url``, the ini keys
``parity_legacy_url`` / ``parity_modern_url``, or the environment variables
``CUTOVER_PARITY_LEGACY_URL`` / ``CUTOVER_PARITY_MODERN_URL`` (in that order of
precedence); or override the session fixture ``parity_urls`` to start them
yourself and return ``{"legacy": url, "modern": url}``.

Two fixtures use them:

* ``service``: parametrised over ``legacy`` and ``modern``, so a test runs once
  against each. It has ``.stack``, ``.url`` and ``await service.request(method,
  path, **httpx_kwargs)``.
* ``assert_same``: ``await assert_same("PUT", "/items/apple", json={...},
  rules=DiffRules(...))`` sends the one request to both, compares the answers
  with :func:`bridge.parity.diff.diff` and fails with the readable diff; it
  returns ``(legacy_response, modern_response)``. Request bodies must be
  re-sendable (bytes, str, ``json=``, ``files=`` with bytes), since each is
  sent twice.

Both take an optional ``route="GET /orders/{order_id}"`` label; without one a
request counts for ``"METHOD /path"`` (the query string left out). At the end
of the session the plugin writes a report (``var/parity.json`` under the rootdir
by default; ``--parity-report PATH`` or the ini key ``parity_report`` to move it)
that ``cutover parity`` and ``cutover status`` read: per route, the outcomes of
the tests that sent it to each stack and how many ``assert_same`` comparisons
found the same output. The report is only written when a test used the
fixtures, so an unrelated run never overwrites it.

This module never imports the applications under test: it only speaks HTTP.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from .diff import DEFAULT_RULES, DiffRules, Exchange, diff

__all__ = ["REPORT_VERSION", "STACKS", "AssertSame", "ParityRecorder", "Service", "configured_urls", "route_key"]

STACKS = ("legacy", "modern")
ENV = {"legacy": "CUTOVER_PARITY_LEGACY_URL", "modern": "CUTOVER_PARITY_MODERN_URL"}
DEFAULT_REPORT = "var/parity.json"
REPORT_VERSION = 1
OUTCOMES = ("passed", "failed", "xfailed", "skipped")

_recorder_key = pytest.StashKey["ParityRecorder"]()
_touched_key = pytest.StashKey["set[tuple[str, str]]"]()
_runner_key = pytest.StashKey["asyncio.Runner"]()
PARITY_FIXTURES = ("assert_same", "service", "parity_urls")
OTHER_ASYNC_MARKERS = ("asyncio", "anyio", "trio")


# --------------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("parity", "parity: the same tests against two implementations")
    for stack in STACKS:
        group.addoption(
            f"--parity-{stack}-url",
            dest=f"parity_{stack}_url",
            default=None,
            metavar="URL",
            help=f"base URL of the running {stack} implementation (env {ENV[stack]})",
        )
        parser.addini(f"parity_{stack}_url", f"base URL of the running {stack} implementation", default="")
    group.addoption(
        "--parity-report",
        dest="parity_report",
        default=None,
        metavar="PATH",
        help=f"where to write the parity report (default: {DEFAULT_REPORT} under the rootdir)",
    )
    parser.addini("parity_report", "where to write the parity report, relative to the rootdir", default=DEFAULT_REPORT)
    parser.addini("parity_timeout", "seconds to wait for each parity request", default="60")


def _option(config: pytest.Config, name: str) -> Any:
    # getoption with a default: the plugin may be registered after the command line was parsed.
    return config.getoption(name, default=None)


def configured_urls(config: pytest.Config) -> dict[str, str] | None:
    """The two URLs from the command line, environment or ini file; None if neither is given.

    Raises ``pytest.UsageError`` if only one of the two is given.
    """
    urls: dict[str, str] = {}
    for stack in STACKS:
        value = _option(config, f"parity_{stack}_url") or os.environ.get(ENV[stack]) or config.getini(f"parity_{stack}_url")
        if value:
            urls[stack] = str(value).rstrip("/")
    if not urls:
        return None
    missing = [s for s in STACKS if s not in urls]
    if missing:
        raise pytest.UsageError(f"parity: a {missing[0]} URL is needed too (--parity-{missing[0]}-url or {ENV[missing[0]]})")
    return urls


def _report_path(config: pytest.Config) -> Path:
    given = _option(config, "parity_report")
    if given:
        return Path(config.invocation_params.dir, given)
    return Path(config.rootpath, config.getini("parity_report") or DEFAULT_REPORT)


def _timeout(config: pytest.Config) -> float:
    try:
        return float(config.getini("parity_timeout"))
    except ValueError:
        raise pytest.UsageError(f"parity_timeout must be a number of seconds, got {config.getini('parity_timeout')!r}") from None


def route_key(method: str, path: str) -> str:
    """``"POST /orders"`` for ``("post", "/orders?express=1")``: the query string is not part of the route."""
    return f"{method.upper()} {urlsplit(path).path or '/'}"


# --------------------------------------------------------------------------- recording


class ParityRecorder:
    """Counts per route: test outcomes per stack, and same/different comparisons."""

    def __init__(self) -> None:
        self.outcomes: dict[str, dict[str, dict[str, int]]] = defaultdict(
            lambda: {stack: dict.fromkeys(OUTCOMES, 0) for stack in STACKS}
        )
        self.same: dict[str, dict[str, int]] = defaultdict(lambda: {"equal": 0, "different": 0})
        self.started = time.time()

    def outcome(self, route: str, stack: str, outcome: str) -> None:
        self.outcomes[route][stack][outcome] += 1

    def compared(self, route: str, equal: bool) -> None:
        self.outcomes[route]  # noqa: B018 - the route appears even if its test never finishes
        self.same[route]["equal" if equal else "different"] += 1

    def __bool__(self) -> bool:
        return bool(self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        routes = {}
        for route in sorted(self.outcomes, key=lambda key: (key.split(" ", 1)[-1], key)):
            routes[route] = {**self.outcomes[route], "same": dict(self.same.get(route, {"equal": 0, "different": 0}))}
        return {
            "version": REPORT_VERSION,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - self.started, 3),
            "routes": routes,
        }


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_recorder_key] = ParityRecorder()


def _touched(item: pytest.Item) -> set[tuple[str, str]]:
    return item.stash.setdefault(_touched_key, set())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    touched = item.stash.get(_touched_key, None)
    recorder = item.config.stash.get(_recorder_key, None)
    if not touched or recorder is None or report.when != "call":
        return
    if hasattr(report, "wasxfail"):
        result = "xfailed" if report.skipped else "passed"  # a non-strict xpass passed
    else:
        result = report.outcome  # passed, failed or skipped
    for route, stack in touched:
        recorder.outcome(route, stack, result)


# --------------------------------------------------------------------------- async tests and fixtures


def _uses_parity(names: Any) -> bool:
    return any(name in names for name in PARITY_FIXTURES)


def _run(config: pytest.Config, awaitable: Awaitable[Any]) -> Any:
    """Run ``awaitable`` to completion from synchronous pytest code, and return its result."""

    async def wait() -> Any:
        return await awaitable

    if asyncio._get_running_loop() is not None:  # pytest-twisted: the reactor's loop runs in a greenlet
        from pytest_twisted import blockon

        from ..deferreds import as_deferred

        return blockon(as_deferred(wait()))
    runner = config.stash.get(_runner_key, None)
    if runner is None:
        runner = config.stash[_runner_key] = asyncio.Runner()
    return runner.run(wait())


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a bare ``async def`` parity test; leave every other test to whoever runs it."""
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn) or not _uses_parity(pyfuncitem.fixturenames):
        return None
    if any(pyfuncitem.get_closest_marker(name) for name in OTHER_ASYNC_MARKERS):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    _run(pyfuncitem.config, fn(**kwargs))
    return True


def _async_fixture_is_ours(fixturedef: Any, request: pytest.FixtureRequest) -> bool:
    func = fixturedef.func
    if not (inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)):
        return False
    if getattr(func, "_pytest_twisted_mark", None) or "anyio_backend" in request.fixturenames:
        return False  # pytest-twisted's and anyio's own
    plugins = request.config.pluginmanager
    others = any(plugins.has_plugin(name) for name in ("asyncio", "anyio", "trio"))
    return _uses_parity(request.fixturenames) or _uses_parity(fixturedef.argnames) or not others


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Generator[None, Any, Any]:
    """Hand pytest a synchronous stand-in for an ``async def`` fixture no other plugin takes."""
    if not _async_fixture_is_ours(fixturedef, request):
        return (yield)
    original = fixturedef.func
    config = request.config
    fixturedef.func = _sync_fixture(original, config)
    try:
        return (yield)
    finally:
        fixturedef.func = original


def _sync_fixture(original: Callable[..., Any], config: pytest.Config) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(original):

        @functools.wraps(original)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            agen = original(*args, **kwargs)
            yield _run(config, agen.__anext__())
            try:
                _run(config, agen.__anext__())
            except StopAsyncIteration:
                return
            raise RuntimeError(f"async fixture {original.__qualname__} yielded more than once")

        return generator

    @functools.wraps(original)
    def plain(*args: Any, **kwargs: Any) -> Any:
        return _run(config, original(*args, **kwargs))

    return plain


def pytest_unconfigure(config: pytest.Config) -> None:
    runner = config.stash.get(_runner_key, None)
    if runner is not None:
        runner.close()


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    recorder = config.stash.get(_recorder_key, None)
    if not recorder or hasattr(config, "workerinput"):  # nothing to say, or an xdist worker
        return
    path = _report_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(recorder.to_dict(), indent=2) + "\n")
    tmp.replace(path)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    recorder = config.stash.get(_recorder_key, None)
    if recorder and not hasattr(config, "workerinput"):
        terminalreporter.write_line(f"parity report: {_report_path(config)}")


# --------------------------------------------------------------------------- fixtures


async def _send(url: str, timeout: float, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as http:
        response = await http.request(method, path, **kwargs)
        await response.aread()
        return response


def _json_at(response: httpx.Response, path: str) -> str | None:
    """The string at a dotted JSON path of a response body, or None."""
    try:
        value: Any = response.json()
    except ValueError:
        return None
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, str) else None


def _exchange(response: httpx.Response) -> Exchange:
    return Exchange(response.status_code, dict(response.headers), response.content)


class Service:
    """One implementation under test: ``stack`` is ``"legacy"`` or ``"modern"``."""

    def __init__(self, stack: str, url: str, timeout: float, item: pytest.Item | None = None) -> None:
        self.stack = stack
        self.url = url
        self.timeout = timeout
        self._item = item

    def __repr__(self) -> str:
        return f"Service({self.stack!r}, {self.url!r})"

    async def request(self, method: str, path: str, *, route: str | None = None, **kwargs: Any) -> httpx.Response:
        """Send one request (httpx keyword arguments) and return the whole response."""
        if self._item is not None:
            _touched(self._item).add((route or route_key(method, path), self.stack))
        return await _send(self.url, self.timeout, method, path, **kwargs)


class AssertSame:
    """``await assert_same(method, path, rules=..., route=..., **httpx_kwargs)``; see the module docstring."""

    def __init__(self, urls: dict[str, str], timeout: float, item: pytest.Item | None = None) -> None:
        self.urls = urls
        self.timeout = timeout
        self._item = item

    async def __call__(
        self,
        method: str,
        path: str | Mapping[str, str],
        *,
        rules: DiffRules = DEFAULT_RULES,
        route: str | None = None,
        aliases: Mapping[str, str] | None = None,
        id_from: str | None = None,
        **kwargs: Any,
    ) -> tuple[httpx.Response, httpx.Response]:
        """``path`` may be ``{"legacy": p1, "modern": p2}`` when the two name one resource differently
        (a job id each side created); pass ``route=`` then, since the paths differ.

        ``aliases`` (``{modern_id: legacy_id}``) and ``id_from`` (a dotted JSON path, such as ``"job_id"``,
        where each answer names the resource it made) say which strings name one thing on both sides: modern's
        is read as legacy's, so ids, ``Location`` and messages that name them compare equal."""
        paths = {stack: path for stack in STACKS} if isinstance(path, str) else {s: path[s] for s in STACKS}
        key = route or route_key(method, paths["legacy"])
        if self._item is not None:
            _touched(self._item).update((key, stack) for stack in STACKS)
        # One after the other, legacy first: the two never compete for the same backend.
        legacy = await _send(self.urls["legacy"], self.timeout, method, paths["legacy"], **kwargs)
        modern = await _send(self.urls["modern"], self.timeout, method, paths["modern"], **kwargs)
        same = dict(aliases or {})
        if id_from is not None:
            ids = [_json_at(response, id_from) for response in (legacy, modern)]
            if ids[0] is not None and ids[1] is not None:
                same[ids[1]] = ids[0]
        found = diff(_exchange(legacy), _exchange(modern), rules, same)
        if self._item is not None and (recorder := self._item.config.stash.get(_recorder_key, None)) is not None:
            recorder.compared(key, found.equal)
        if not found.equal:
            shown = paths["legacy"] if paths["legacy"] == paths["modern"] else f"{paths['legacy']} | {paths['modern']}"
            pytest.fail(f"{method.upper()} {shown}: legacy and modern differ\n{found.to_text()}")
        return legacy, modern


@pytest.fixture(scope="session")
def parity_urls(pytestconfig: pytest.Config) -> dict[str, str]:
    """``{"legacy": url, "modern": url}``; override it in a conftest to start the services yourself."""
    urls = configured_urls(pytestconfig)
    if urls is None:
        pytest.fail(
            "parity: no services to compare: pass --parity-legacy-url and --parity-modern-url, set "
            f"{ENV['legacy']} and {ENV['modern']}, or override the parity_urls fixture",
            pytrace=False,
        )
    return urls


def _check_urls(urls: Any) -> dict[str, str]:
    if not isinstance(urls, dict) or any(not isinstance(urls.get(s), str) or not urls.get(s) for s in STACKS):
        pytest.fail(f'parity_urls must return {{"legacy": url, "modern": url}}, got {urls!r}', pytrace=False)
    return {stack: urls[stack].rstrip("/") for stack in STACKS}


@pytest.fixture(params=STACKS)
def service(request: pytest.FixtureRequest, parity_urls: dict[str, str]) -> Service:
    """The implementation this test runs against: once ``legacy``, once ``modern``."""
    stack = request.param
    return Service(stack, _check_urls(parity_urls)[stack], _timeout(request.config), request.node)


@pytest.fixture
def assert_same(request: pytest.FixtureRequest, parity_urls: dict[str, str]) -> AssertSame:
    """Send one request to both implementations and fail with the readable diff if a client could tell them apart."""
    return AssertSame(_check_urls(parity_urls), _timeout(request.config), request.node)
