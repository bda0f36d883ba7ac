"""``bridge.rewrite``: the corpus of before/after pairs, idempotence, reports, and one run under Twisted."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, task

from bridge.rewrite import Report, rewrite_source

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(p.name.removesuffix(".before.py") for p in CORPUS.glob("*.before.py"))

# Lines (in the .before file) of what each case leaves unchanged.
EXPECTED_REPORT_LINES: dict[str, list[int]] = {
    "basic": [],
    "full_path": [],
    "nested_inline": [],
    "nested_reported": [7, 14, 22],
    "stacked_decorators": [20],  # @logged below @inlineCallbacks now wraps an async def
    "try_except": [],
}


def _pair(name: str) -> tuple[str, str]:
    return (CORPUS / f"{name}.before.py").read_text(), (CORPUS / f"{name}.after.py").read_text()


def test_corpus_is_complete() -> None:
    assert CASES == sorted(EXPECTED_REPORT_LINES)
    assert all((CORPUS / f"{name}.after.py").exists() for name in CASES)


@pytest.mark.parametrize("name", CASES)
def test_corpus(name: str) -> None:
    before, after = _pair(name)
    result = rewrite_source(before)
    assert result.code == after
    assert result.changed == (before != after)
    assert [r.line for r in result.reports] == EXPECTED_REPORT_LINES[name]
    ast.parse(result.code)


@pytest.mark.parametrize("name", CASES)
def test_idempotent(name: str) -> None:
    _, after = _pair(name)
    again = rewrite_source(after)
    assert again.code == after
    assert not again.changed


def test_reports_say_why() -> None:
    before, _ = _pair("nested_reported")
    reports = rewrite_source(before).reports
    assert all(isinstance(r, Report) for r in reports)
    reasons = [r.reason for r in reports]
    assert "returnValue() inside a nested function" in reasons[0] and reasons[0].startswith("outer()")
    assert "bare yield" in reasons[1]
    assert "not as a decorator" in reasons[2] or "other than as a decorator" in reasons[2]


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("@inlineCallbacks\ndef f():\n    yield from g()\n", "yield from"),
        ("@inlineCallbacks\ndef f():\n    cb = lambda: (yield 1)\n    yield cb()\n", "nested"),
        ("@inlineCallbacks\ndef f(d):\n    x = yield d\n    return returnValue(x)\n", "inside an expression"),
        ("@inlineCallbacks\ndef f():\n    yield d\n\n\ng = inlineCallbacks(f)\n", "passed to inlineCallbacks"),
    ],
)
def test_left_unchanged(source: str, reason: str) -> None:
    result = rewrite_source(source)
    assert result.code == source
    assert not result.changed
    assert any(reason in r.reason for r in result.reports), result.reports


def test_nothing_to_do() -> None:
    source = "import os  # no Twisted here\n\n\ndef f():\n    yield 1\n"
    result = rewrite_source(source)
    assert (result.code, result.changed, result.reports) == (source, False, [])


SAMPLE = '''
from twisted.internet import defer
from twisted.internet.defer import inlineCallbacks, returnValue


class Refused(Exception):
    pass


@inlineCallbacks
def total(fetch, keys):
    """Sum the values of keys; a negative value is refused."""
    result = 0
    for key in keys:
        try:
            value = yield fetch(key)
        except KeyError:
            value = 0  # a missing key counts as nothing
        if value < 0:
            raise Refused(key)
        result += value
    yield defer.succeed(None)
    returnValue(result)
'''


def _load(source: str) -> dict:
    namespace: dict = {"__name__": "rewrite_sample"}
    exec(compile(source, "<sample>", "exec"), namespace)
    return namespace


@pytest.mark.filterwarnings("ignore:twisted.internet.defer.returnValue:DeprecationWarning")
@pytest_twisted.inlineCallbacks
def test_converted_behaves_like_the_original():
    from twisted.internet import reactor

    converted = rewrite_source(SAMPLE)
    assert converted.changed and not converted.reports
    assert "async def total" in converted.code and "@deferred_api" in converted.code
    old, new = _load(SAMPLE), _load(converted.code)
    values = {"a": 1, "b": 20, "neg": -5}

    def fetch(key):  # a Deferred that fires on a later reactor turn, or fails
        if key not in values:
            return task.deferLater(reactor, 0, lambda: (_ for _ in ()).throw(KeyError(key)))
        return task.deferLater(reactor, 0, values.__getitem__, key)

    outcomes = []
    for mod in (old, new):
        d = mod["total"](fetch, ["a", "missing", "b"])
        assert isinstance(d, defer.Deferred)  # Twisted callers still get a Deferred
        ok = yield d
        try:
            yield mod["total"](fetch, ["a", "neg"])
        except mod["Refused"] as exc:
            failed = (type(exc).__name__, exc.args)
        outcomes.append((ok, failed))
    assert outcomes[0] == outcomes[1] == (21, ("Refused", ("neg",)))

    # Only the converted one also awaits asyncio futures (it runs as an asyncio Task).
    def fetch_async(key):
        return asyncio.ensure_future(asyncio.sleep(0, result=values[key]))

    assert (yield new["total"](fetch_async, ["a", "b"])) == 21
