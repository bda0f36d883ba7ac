"""The codemod keeps inlineCallbacks semantics: each construct of issue 13, run before and after the rewrite."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from bridge.rewrite import rewrite_source
from bridge.rewrite.runner import Progress, main, rewrite_files
from bridge.testing import asyncio_test

REPO = Path(__file__).resolve().parents[2]


def _load(source: str, name: str = "rewritten") -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": name}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace


EAGER = '''
from twisted.internet.defer import inlineCallbacks, returnValue


class Service:
    def __init__(self, gate):
        self.gate, self.ready, self.steps = gate, False, []

    @inlineCallbacks
    def _setup(self):
        self.ready = True
        self.steps.append("setup")
        value = yield self.gate
        self.steps.append("after gate")
        returnValue(value)

    def start(self):
        self.ready = False
        d = self._setup()
        assert self.ready  # the body ran at once, up to the first unfired Deferred
        return d
'''


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_converted_function_starts_at_once_as_inlinecallbacks_did() -> None:
    result = rewrite_source(EAGER)
    assert "async def _setup" in result.code
    assert "value = await maybe_awaitable(self.gate)" in result.code  # an attribute: its type is unknown
    assert not result.reports and [h.line for h in result.helpers] == [13]
    for source in (EAGER, result.code):
        gate: defer.Deferred[int] = defer.Deferred()
        service = _load(source)["Service"](gate)
        d = service.start()
        assert isinstance(d, defer.Deferred) and not d.called
        assert service.steps == ["setup"]
        gate.callback(7)
        assert service.steps == ["setup", "after gate"] and d.result == 7


MAYBE = '''
from twisted.internet import defer


class Port:
    def __init__(self, result):
        self.result = result

    def stopListening(self):
        return self.result  # a Deferred, or None: both are fine for inlineCallbacks


@defer.inlineCallbacks
def shut_down(port, done):
    yield port.stopListening()
    value = yield defer.succeed(1)
    local = defer.Deferred()
    local.callback(2)
    other = yield local
    yield done
    defer.returnValue(value + other)
'''


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("stop", [None, "deferred"])
def test_a_value_that_may_not_be_a_deferred_is_awaited_through_the_helper(stop: str | None) -> None:
    result = rewrite_source(MAYBE)
    assert "await maybe_awaitable(port.stopListening())" in result.code
    assert "value = await defer.succeed(1)" in result.code  # a known Twisted API: a plain await
    assert "other = await local" in result.code  # a Deferred built in the function
    assert "await maybe_awaitable(done)" in result.code  # a parameter: unknown
    assert [h.line for h in result.helpers] == [15, 20]
    assert "from bridge import deferred_api, maybe_awaitable" in result.code
    outcomes = []
    for source in (MAYBE, result.code):
        mod = _load(source)
        port = mod["Port"](None if stop is None else defer.succeed(None))
        done: defer.Deferred[None] = defer.Deferred()
        d = mod["shut_down"](port, done)
        done.callback(None)
        outcomes.append(d.result)
    assert outcomes == [3, 3]


def test_report_mode_awaits_plainly_and_reports_each_unknown_yield() -> None:
    result = rewrite_source(MAYBE, unknown_yields="report")
    assert "maybe_awaitable" not in result.code
    assert "await port.stopListening()" in result.code
    assert [r.line for r in result.reports] == [15, 20]
    assert all("not known to be awaitable" in r.reason for r in result.reports)
    assert not result.helpers
    # and indeed: the plain await fails where the value is None, as the report warns
    d = _load(result.code)["shut_down"](_load(MAYBE)["Port"](None), defer.succeed(None))
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures[0].check(TypeError)


PATCHED = '''
import os
from unittest import mock

from twisted.internet import defer


@mock.patch("os.getcwd", return_value="/patched")
@defer.inlineCallbacks
def where(gate, seen, getcwd):
    seen.append(os.getcwd())
    yield gate
    seen.append(os.getcwd())


def retry(fn):
    def wrapper(*args):
        try:
            return fn(*args)
        except ValueError:
            return fn(*args)
    return wrapper


@retry
@defer.inlineCallbacks
def flaky(d):
    value = yield d
    defer.returnValue(value)


@defer.inlineCallbacks
@retry
def below(d):
    value = yield d
    defer.returnValue(value)
'''


def test_a_patch_decorator_above_keeps_its_meaning_on_the_twisted_target() -> None:
    import os

    result = rewrite_source(PATCHED)
    lines = [r.line for r in result.reports]
    assert lines == [33]  # only @retry below the Twisted decorator: it now wraps an async def
    assert "below the Twisted decorator" in result.reports[0].reason
    seen_before: list[str] = []
    seen_after: list[str] = []
    for source, seen in ((PATCHED, seen_before), (result.code, seen_after)):
        gate: defer.Deferred[None] = defer.Deferred()
        _load(source)["where"](gate, seen)
        gate.callback(None)
    assert seen_before == seen_after == ["/patched", os.getcwd()]


def test_decorators_above_are_reported_on_the_asyncio_target_unless_mock_handles_them() -> None:
    result = rewrite_source(PATCHED, "asyncio")
    reasons = {r.line: r.reason for r in result.reports}
    assert 25 in reasons and "@retry wraps the call, which now returns a coroutine" in reasons[25]
    assert 33 in reasons and "below the Twisted decorator" in reasons[33]
    assert not any("@mock.patch" in reason for reason in reasons.values())


TOR = '''
from twisted.internet import defer


class Tor:
    @defer.inlineCallbacks
    def dns_resolve(self, host):
        answer = yield defer.succeed(host.upper())
        defer.returnValue(answer)
'''

CALLER = '''
from twisted.internet import defer


@defer.inlineCallbacks
def lookup(tor, host):
    answer = yield tor.dns_resolve(host)
    defer.returnValue(answer)


def legacy(tor, host):
    return tor.dns_resolve(host).addCallback(len)
'''

OTHER = '''
from twisted.internet import defer


class Cache:
    def dns_resolve(self, host):
        return defer.succeed(host)
'''


def _tree(tmp_path: Path, **files: str) -> list[Path]:
    paths = []
    for name, source in files.items():
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        paths.append(path)
    return paths


@asyncio_test
async def test_a_method_converted_in_one_file_is_awaited_on_another_receiver_in_another(tmp_path: Path) -> None:
    tor, caller = rewrite_files(_tree(tmp_path, tor=TOR, caller=CALLER), "asyncio")
    assert "async def dns_resolve" in tor.code
    assert "answer = await tor.dns_resolve(host)" in caller.code  # no as_future of a coroutine
    reasons = [r.reason for r in caller.reports]
    assert any("dns_resolve() now returns a coroutine" in r and ".addCallback()" in r for r in reasons), reasons

    tor_mod, caller_mod = _load(tor.code, "tor"), _load(caller.code, "caller")
    assert await caller_mod["lookup"](tor_mod["Tor"](), "example") == "EXAMPLE"


def test_an_unknown_receiver_whose_method_is_converted_in_one_class_only_is_reported(tmp_path: Path) -> None:
    _, caller, _ = rewrite_files(_tree(tmp_path, tor=TOR, caller=CALLER, other=OTHER), "asyncio")
    assert "answer = await maybe_awaitable(tor.dns_resolve(host))" in caller.code
    assert any("receiver's type is unknown" in r.reason for r in caller.reports)
    assert "from bridge import maybe_awaitable" in caller.code


def test_on_the_twisted_target_a_converted_method_of_the_enclosing_class_is_awaited_plainly(tmp_path: Path) -> None:
    sub = textwrap.dedent('''
        from twisted.internet import defer

        from tor import Tor


        class Sub(Tor):
            @defer.inlineCallbacks
            def twice(self, host):
                first = yield self.dns_resolve(host)
                second = yield self.unknown(host)
                defer.returnValue(first + second)
        ''')
    _, out = rewrite_files(_tree(tmp_path, tor=TOR, sub=sub), "twisted")
    assert "first = await self.dns_resolve(host)" in out.code  # inherited, converted in another file
    assert "second = await maybe_awaitable(self.unknown(host))" in out.code


def test_continuation_lines_stay_aligned_after_async_is_added() -> None:
    source = textwrap.dedent('''
        from twisted.internet import defer


        class Client:
            @defer.inlineCallbacks
            def request(self, method,
                        url,  # the comment moves too
                        # a comment line
                        headers=None):
                yield defer.succeed(None)

            @defer.inlineCallbacks
            def hanging(
                self, url
            ):
                yield defer.succeed(None)
        ''')
    code = rewrite_source(source).code
    column = " " * len("    async def request(")
    assert f"    async def request(self, method,\n{column}url,  # the comment moves too\n" in code
    assert f"\n{column}# a comment line\n{column}headers=None):" in code
    assert "    async def hanging(\n        self, url\n    ):" in code


@pytest.mark.parametrize(
    ("source", "first_party", "expected"),
    [
        ("import os\n\nfrom twisted.internet import defer\nfrom zope.interface import implementer\n\n"
         "from mine import x\n", frozenset(),
         "import os\n\nfrom bridge import deferred_api\nfrom twisted.internet import defer\n"
         "from zope.interface import implementer\n\nfrom mine import x\n"),
        ("import os\n\nfrom twisted.internet import defer\n\nfrom mine import x\n", frozenset({"mine", "bridge"}),
         "import os\n\nfrom twisted.internet import defer\n\nfrom bridge import deferred_api\nfrom mine import x\n"),
        ("import os\nfrom twisted.internet.defer import inlineCallbacks\n", frozenset(),
         "import os\n\nfrom bridge import deferred_api, maybe_awaitable\n"),
    ],
)
def test_the_bridge_import_goes_into_its_isort_group(source: str, first_party: frozenset[str], expected: str) -> None:
    ic = "defer.inlineCallbacks" if "import defer" in source else "inlineCallbacks"
    body = f"\n\n@{ic}\ndef f(d):\n    yield defer.succeed(d)\n" if "import defer" in source else \
        f"\n\n@{ic}\ndef f(d):\n    x = yield d\n"
    code = rewrite_source(source + body, first_party=first_party).code
    assert code.startswith(expected), code


def test_the_project_config_decides_whether_bridge_is_first_party(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.ruff.lint.isort]\nknown-first-party = ["bridge", "svc"]\n')
    (tmp_path / "svc").mkdir()
    module = tmp_path / "svc" / "work.py"
    module.write_text("from twisted.internet import defer\n\nfrom svc import util\n\n\n@defer.inlineCallbacks\n"
                      "def f():\n    yield defer.succeed(util)\n")
    (out,) = rewrite_files([module])
    assert out.code.startswith("from twisted.internet import defer\n\nfrom bridge import deferred_api\n"
                               "from svc import util\n"), out.code


def test_worker_processes_give_the_same_output_as_one_process(tmp_path: Path) -> None:
    files = []
    for i in range(45):
        path = tmp_path / f"m{i:02}.py"
        path.write_text(f"from twisted.internet import defer\n\nfrom m{(i + 1) % 45:02} import f{(i + 1) % 45}\n\n\n"
                        f"@defer.inlineCallbacks\ndef f{i}(x):\n    y = yield f{(i + 1) % 45}(x)\n"
                        f"    z = yield x.unknown()\n    defer.returnValue(y + z)\n")
        files.append(path)
    one = rewrite_files(files, jobs=1)
    two = rewrite_files(files, jobs=2, processes_from=40)
    assert [o.code for o in one] == [o.code for o in two]
    assert [o.helpers for o in one] == [o.helpers for o in two]
    assert all(f"await f{(i + 1) % 45}(x)" in o.code for i, o in enumerate(two))  # known across processes


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_drawn_on_a_terminal_only(tmp_path: Path) -> None:
    files = _tree(tmp_path, tor=TOR, caller=CALLER)
    quiet, out = io.StringIO(), io.StringIO()
    assert main(files, "twisted", "check", out=out, err=quiet) == 1
    assert "\r" not in quiet.getvalue()
    terminal = _Terminal()
    main(files, "twisted", "check", out=io.StringIO(), err=terminal)
    assert "\r\x1b[Krewrite: 2/2 files, 2 converted, 0 reported, 1 helpers" in terminal.getvalue()
    progress = Progress(3, io.StringIO())
    assert not progress.enabled


def test_a_file_that_does_not_parse_is_reported_and_the_others_still_rewritten(tmp_path: Path) -> None:
    files = _tree(tmp_path, tor=TOR, broken="def f(:\n")
    err = io.StringIO()
    assert main(files, "twisted", "write", out=io.StringIO(), err=err) == 1
    assert f"{tmp_path / 'broken.py'}:1: cannot parse, left unchanged" in err.getvalue()
    assert "async def dns_resolve" in (tmp_path / "tor.py").read_text()


CHILD = '''
import sys
from twisted.internet import reactor, task
from twisted.internet.asyncioreactor import AsyncioSelectorReactor

assert not isinstance(reactor, AsyncioSelectorReactor)
namespace = {"__name__": "converted"}
exec(compile(open(sys.argv[1]).read(), sys.argv[1], "exec"), namespace)


def main(reactor):
    service = namespace["Service"](task.deferLater(reactor, 0.01, lambda: 5))
    d = service.start()
    assert service.steps == ["setup"], service.steps
    return d.addCallback(lambda value: print("RESULT", value, service.steps))


task.react(main)
'''


@pytest.mark.subprocess
def test_rewritten_code_runs_on_twisteds_default_reactor(tmp_path: Path) -> None:
    converted = tmp_path / "converted.py"
    converted.write_text(rewrite_source(EAGER).code)
    child = subprocess.run([sys.executable, "-c", CHILD, str(converted)], capture_output=True, text=True,
                           timeout=60, cwd=REPO)
    assert child.returncode == 0, child.stderr
    assert "RESULT 5 ['setup', 'after gate']" in child.stdout


def test_a_function_the_tree_patches_is_not_trusted_to_be_awaitable(tmp_path: Path) -> None:
    util = ("from twisted.internet import defer\n\n\n@defer.inlineCallbacks\ndef free_port(reactor):\n"
            "    port = yield defer.succeed(9050)\n    defer.returnValue(port)\n")
    user = ("from twisted.internet import defer\n\nfrom util import free_port\n\n\n@defer.inlineCallbacks\n"
            "def start(reactor):\n    port = yield free_port(reactor)\n    defer.returnValue(port)\n")
    test = ("from unittest import mock\n\n\ndef test_start():\n"
            "    with mock.patch('user.free_port', return_value=1234):\n        pass\n")
    _, plain = rewrite_files(_tree(tmp_path, util=util, user=user))
    assert "port = await free_port(reactor)" in plain.code  # converted elsewhere: known
    _, patched, _ = rewrite_files(_tree(tmp_path, util=util, user=user, test_user=test))
    assert "port = await maybe_awaitable(free_port(reactor))" in patched.code  # a Mock may return 1234
