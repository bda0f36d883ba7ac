"""``rewrite_source(..., target="asyncio")``: the corpus, idempotence, reports, and each sample run both ways.

The original runs under Twisted (its Deferred awaited through ``as_future``); the
converted code runs as a plain coroutine. Samples that no longer touch Twisted
run in a fresh ``asyncio.run`` loop in another thread, with no reactor at all.
"""

from __future__ import annotations

import ast
import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from bridge import SharedPool, as_future, set_pool
from bridge.rewrite import rewrite_source
from bridge.testing import asyncio_fixture, asyncio_test
from tests.conftest import in_daemon_thread

CORPUS = Path(__file__).parent / "corpus_asyncio"
CASES = sorted(p.name.removesuffix(".before.py") for p in CORPUS.glob("*.before.py"))

EXPECTED_REPORTS: dict[str, list[tuple[int, str]]] = {
    "gather": [],
    "reported": [(7, "@task(every=30)"), (7, "wrapped in deferred_api()"), (12, ".addCallbacks() chain"), (13, "deferLater() with a callable")],
    "step_two": [],
    "threads_and_sleeps": [],
    "twisted_sources": [(30, "lookup_twice() now returns a coroutine, not a Deferred: .addCallback() on it fails")],
}


def _pair(name: str) -> tuple[str, str]:
    return (CORPUS / f"{name}.before.py").read_text(), (CORPUS / f"{name}.after.py").read_text()


def test_corpus_is_complete() -> None:
    assert CASES == sorted(EXPECTED_REPORTS)


@pytest.mark.parametrize("name", CASES)
def test_corpus(name: str) -> None:
    before, after = _pair(name)
    result = rewrite_source(before, "asyncio")
    assert result.code == after
    assert result.changed
    got = [(r.line, r.reason) for r in result.reports]
    assert [line for line, _ in got] == [line for line, _ in EXPECTED_REPORTS[name]]
    assert all(fragment in reason for (_, reason), (_, fragment) in zip(got, EXPECTED_REPORTS[name], strict=True))
    ast.parse(result.code)


@pytest.mark.parametrize("name", CASES)
def test_idempotent(name: str) -> None:
    _, after = _pair(name)
    again = rewrite_source(after, "asyncio")
    assert (again.code, again.changed) == (after, False)


def test_step_one_output_moves_on_to_asyncio_like_the_original() -> None:
    before, after = _pair("threads_and_sleeps")
    step_one = rewrite_source(before, "twisted").code
    assert "@deferred_api" in step_one
    step_two = rewrite_source(step_one, "asyncio").code
    assert "deferred_api" not in step_two
    # the same body as converting the original directly
    assert step_two[step_two.index("async def main"):] == after[after.index("async def main"):]


def test_calls_into_other_converted_modules_are_awaited_directly() -> None:
    source = "from twisted.internet import defer\n\n\n@defer.inlineCallbacks\ndef f(x):\n    y = yield helper(x)\n"
    alone = rewrite_source(source, "asyncio")
    # helper() may give a Deferred or a plain value (inlineCallbacks took both): passed through, and listed
    assert "await maybe_awaitable(helper(x))" in alone.code
    assert [r.line for r in alone.helpers] == [6]
    together = rewrite_source(source, "asyncio", also_async={"helper"}).code
    assert "await helper(x)" in together and "as_future" not in together
    qualified = source.replace("helper(x)", "helpers.helper(x)")
    assert "await helpers.helper(x)" in rewrite_source(qualified, "asyncio", also_async={"helper"}).code
    # a method elsewhere is not a module-level function: self.helper() here is still a Deferred
    method = source.replace("helper(x)", "self.helper(x)")
    assert "await maybe_awaitable(self.helper(x))" in rewrite_source(method, "asyncio", also_async={"helper"}).code


def test_async_functions_names_module_level_functions_only() -> None:
    from bridge.rewrite import async_functions

    source = ("from twisted.internet import defer\n\n\n@defer.inlineCallbacks\ndef load(d):\n    yield d\n\n\n"
              "class Store:\n    @defer.inlineCallbacks\n    def get(self, d):\n        yield d\n")
    assert async_functions(source) == {"load"}


def test_call_later_with_keywords_or_a_kept_handle_is_reported_not_broken() -> None:
    source = ("from twisted.internet import defer, reactor\n\n\n@defer.inlineCallbacks\ndef f(d, g):\n"
              "    reactor.callLater(1, g, key=2)\n    call = reactor.callLater(1, g)\n    yield d\n")
    result = rewrite_source(source, "asyncio")
    assert "reactor.callLater(1, g, key=2)" in result.code and "call = reactor.callLater(1, g)" in result.code
    assert [r.line for r in result.reports] == [6, 7]
    assert all("reactor.callLater() with keyword arguments" in r.reason for r in result.reports)
    ast.parse(result.code)


def test_unknown_target_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown target 'trio'"):
        rewrite_source("x = 1\n", "trio")  # type: ignore[arg-type]


# ---------------------------------------------------------------- run both, compare


def _load(source: str, name: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"rewrite_sample_{name}"}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace


async def _outcome(run: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", await run()
    except Exception as exc:  # the outcome compared is the exception's type and args
        return type(exc).__name__, exc.args


@pytest.fixture
@asyncio_fixture
async def shared_pool() -> AsyncIterator[SharedPool]:
    """The process's shared pool for ``get_pool()`` in the samples, restored afterwards."""
    async with SharedPool(processes=1, cpus=2) as mine:
        previous = set_pool(mine)
        try:
            yield mine
        finally:
            set_pool(previous)


RUNS: list[tuple[str, tuple[Any, ...], bool]] = [  # sample, arguments, whether the converted code needs no reactor
    ("threads_and_sleeps", (2, 3), True),
    ("threads_and_sleeps", (-9, 1), True),  # raises LookupError in a thread
    ("gather", (1, 6), True),
    ("step_two", (4, 5), True),
    ("twisted_sources", ("ab",), False),
    ("twisted_sources", ("missing",), False),  # a Twisted failure becomes LookupError from KeyError
]


@pytest.mark.filterwarnings("ignore:twisted.internet.defer.returnValue:DeprecationWarning")
@pytest.mark.parametrize(("name", "args", "reactor_free"), RUNS)
@asyncio_test
async def test_converted_sample_behaves_like_the_original(
    shared_pool: SharedPool, name: str, args: tuple[Any, ...], reactor_free: bool
) -> None:
    before, after = _pair(name)
    original, converted = _load(before, name), _load(after, name)

    def twisted_run() -> Any:
        d = original["main"](*args)
        assert isinstance(d, defer.Deferred)
        return as_future(d)

    expected = await _outcome(twisted_run)
    if reactor_free:
        got = await in_daemon_thread(lambda: asyncio.run(_outcome(lambda: converted["main"](*args))))
    else:
        got = await _outcome(lambda: converted["main"](*args))
    assert got == expected
    assert expected[0] in ("ok", "LookupError")


TRIAL_CASE = '''
from twisted.internet import defer, reactor, task
from twisted.trial import unittest


class Base(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.ready = yield task.deferLater(reactor, 0.01, lambda: True)  # a Deferred: awaited through as_future


class Converted(Base):
    @defer.inlineCallbacks
    def test_awaits_a_deferred(self):
        value = yield task.deferLater(reactor, 0.01, lambda: 41)
        self.assertTrue(self.ready)
        self.assertEqual(value + 1, 42)
'''


def _trial(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "trial_case.py").write_text(source)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]), str(tmp_path)]))
    return subprocess.run([sys.executable, "-m", "twisted.trial", "--reactor=asyncio", "trial_case"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.subprocess
def test_trial_test_methods_run_as_asyncio_tasks(tmp_path: Path) -> None:
    """trial drives a coroutine test with Twisted's driver, where ``await as_future(d)`` fails ("no running
    event loop"): converted test methods and fixtures of a TestCase go behind ``@asyncio_test``."""
    result = rewrite_source(TRIAL_CASE, "asyncio")
    assert result.code.count("@asyncio_test\n    async def") == 2, result.code
    assert "from bridge.testing import asyncio_test" in result.code
    assert "await as_future(task.deferLater(reactor, 0.01, lambda: 41))" in result.code
    assert rewrite_source(result.code, "asyncio").code == result.code  # idempotent
    ran = _trial(tmp_path, result.code)
    assert "PASSED (successes=1)" in ran.stdout, ran.stdout[-3000:]
    # Without the decorator the same conversion fails under trial: the rule is needed.
    bare = _trial(tmp_path, result.code.replace("    @asyncio_test\n", ""))
    assert "FAILED" in bare.stdout, bare.stdout[-3000:]


CALLBACK_SOURCE = """\
from twisted.internet import defer


class Config:
    def __init__(self, ready):
        self.names = None
        ready.addCallback(self._setup)

    @defer.inlineCallbacks
    def _setup(self, data):
        names = yield self._fetch(data)
        self.names = names

    @defer.inlineCallbacks
    def _fetch(self, data):
        words = yield self._split(data)
        defer.returnValue(words)

    async def _split(self, data):
        return data.split()
"""


def test_a_converted_method_given_to_add_callback_is_wrapped_and_runs_at_once() -> None:
    result = rewrite_source(CALLBACK_SOURCE, "asyncio")
    assert "ready.addCallback(deferred_api(self._setup))" in result.code
    assert "from bridge import deferred_api" in result.code
    assert [r.line for r in result.reports if "wrapped in deferred_api()" in r.reason] == [7]
    namespace: dict[str, Any] = {}
    exec(compile(result.code, "converted.py", "exec"), namespace)
    ready: defer.Deferred[str] = defer.Deferred()
    config = namespace["Config"](ready)
    ready.callback("a b")
    assert config.names == ["a", "b"]  # the body ran, in the callback, before callback() returned
    exec(compile(CALLBACK_SOURCE, "original.py", "exec"), original := {})
    ready = defer.Deferred()
    before = original["Config"](ready)
    ready.callback("a b")
    assert before.names == config.names


def test_converted_functions_passed_as_values_or_not_awaited_are_reported() -> None:
    source = (
        "from twisted.internet import defer\n\n\n"
        "@defer.inlineCallbacks\ndef fetch(x):\n    yield x\n\n\n"
        "@defer.inlineCallbacks\ndef run(xs):\n    later = fetch(xs[0])\n    yield defer.gatherResults([fetch(x) for x in xs])\n"
        "    yield later\n\n\n"
        "def plain(xs):\n    return list(map(fetch, xs))\n"
    )
    result = rewrite_source(source, "asyncio")
    by_line = {r.line: r.reason for r in result.reports}
    assert "not awaited" in by_line[11]  # later = fetch(...): runs only once awaited
    assert 12 not in by_line  # inside gatherResults, which becomes asyncio.gather: awaited
    assert "passed as a value" in by_line[17]  # map(fetch, xs) gets coroutines
    assert "map(fetch, xs)" in result.code  # reported, not changed


def test_a_method_converted_in_one_file_is_known_on_another_receiver_in_another(tmp_path: Path) -> None:
    from bridge.rewrite.runner import rewrite_files

    (tmp_path / "tor.py").write_text(
        "from twisted.internet import defer\n\n\nclass Tor:\n    @defer.inlineCallbacks\n"
        "    def dns_resolve(self, host):\n        answer = yield self.query(host)\n        defer.returnValue(answer)\n\n"
        "    def query(self, host):\n        return defer.succeed(host)\n"
    )
    (tmp_path / "other.py").write_text("class Resolver:\n    def dns_resolve(self, host):\n        return host\n")
    (tmp_path / "use.py").write_text(
        "def lookup(tor, host, d):\n    d.addCallback(tor.dns_resolve)\n    return tor.dns_resolve(host)\n"
    )
    outcomes = {o.path.name: o for o in rewrite_files(sorted(tmp_path.glob("*.py")), "asyncio")}
    use = outcomes["use.py"]
    reasons = {r.line: r.reason for r in use.reports}
    # the receiver's type is unknown and another class has a plain dns_resolve: reported all the same
    assert "wrapped in deferred_api()" in reasons[2] and "d.addCallback(deferred_api(tor.dns_resolve))" in use.code
    assert "gets a coroutine where it had a Deferred" in reasons[3]
    assert outcomes["other.py"].code == outcomes["other.py"].source


PLAIN_VALUES = """\
from twisted.internet import defer


def make_agent(reactor):
    return {"agent": reactor}  # a plain value: inlineCallbacks passed it through


def stop():
    return None  # a Deferred, or None, as port.stopListening() returns


@defer.inlineCallbacks
def main(reactor):
    agent = yield make_agent(reactor)
    yield stop()
    done = yield defer.succeed(1)
    defer.returnValue((agent, done))
"""


@asyncio_test
async def test_a_yield_of_a_value_of_unknown_type_is_passed_through_and_listed() -> None:
    """``as_future()`` raises TypeError on what ``inlineCallbacks`` passed through (a plain value, None): a
    value not known to give a Deferred goes through ``maybe_awaitable``, on a listed line."""
    result = rewrite_source(PLAIN_VALUES, "asyncio")
    assert "agent = await maybe_awaitable(make_agent(reactor))" in result.code
    assert "    await maybe_awaitable(stop())\n" in result.code
    assert "done = await as_future(defer.succeed(1))" in result.code  # known to give a Deferred
    assert [(r.line, r.reason.split(":")[0]) for r in result.helpers] == [
        (14, "await maybe_awaitable(make_agent(reactor))"), (15, "await maybe_awaitable(stop())")]
    assert "from bridge import as_future, maybe_awaitable" in result.code
    assert rewrite_source(result.code, "asyncio").code == result.code  # idempotent
    converted = _load(result.code, "plain_values")
    assert await converted["main"]("r") == ({"agent": "r"}, 1)  # as_future(agent) raised TypeError
    # the original, for comparison, passes both through
    original = _load(PLAIN_VALUES, "plain_values_original")
    assert original["main"]("r").result == ({"agent": "r"}, 1)


def test_report_mode_keeps_as_future_and_reports_the_line() -> None:
    result = rewrite_source(PLAIN_VALUES, "asyncio", unknown_yields="report")
    assert "agent = await as_future(make_agent(reactor))" in result.code
    assert not result.helpers
    assert [r.line for r in result.reports if "not known to give a Deferred" in r.reason] == [14, 15]


PATCHED_TRIAL_TEST = """\
import os
from unittest.mock import patch

from twisted.internet import defer, reactor, task
from twisted.trial import unittest


def skip_never(fn):
    return fn


class Case(unittest.TestCase):
    # a comment above the decorators
    @patch("os.getpid", return_value=-1)
    @defer.inlineCallbacks
    def test_patched(self, getpid):
        yield task.deferLater(reactor, 0.01)
        self.assertEqual(os.getpid(), -1)

    @patch("os.getppid", return_value=-1)
    @skip_never
    @defer.inlineCallbacks
    def test_patch_not_right_above(self, getppid):
        yield task.deferLater(reactor, 0.01)
"""


@pytest.mark.subprocess
def test_patches_right_above_a_trial_test_go_below_asyncio_test(tmp_path: Path) -> None:
    """inlineCallbacks ran the test body at once, inside the patch; behind @asyncio_test it starts on a later
    loop turn. ``mock.patch`` right above goes below @asyncio_test, on the async def, where it holds for the
    whole awaited body; a patch above another decorator cannot move and is reported."""
    result = rewrite_source(PATCHED_TRIAL_TEST, "asyncio")
    assert ('    # a comment above the decorators\n    @asyncio_test\n    @patch("os.getpid", return_value=-1)\n'
            '    async def test_patched') in result.code, result.code
    assert [(r.line, "patch is undone before the body runs" in r.reason) for r in result.reports] == [(20, True)]
    assert rewrite_source(result.code, "asyncio").code == result.code  # idempotent
    ran = _trial(tmp_path, result.code)  # test_patched fails if its patch is undone before its body runs
    assert "PASSED (successes=2)" in ran.stdout, ran.stdout[-3000:]
    # the twisted target keeps the eager start: nothing to report there
    assert not rewrite_source(PATCHED_TRIAL_TEST, "twisted").reports
