"""The twisted target parses only the generators that change: the same code, byte for byte, as a whole-module rewrite."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.rewrite.transform import prepare

HERE = Path(__file__).parent
SOURCES = sorted(p for folder in ("corpus", "corpus_asyncio") for p in (HERE / folder).glob("*.py"))

EDGE_CASES = {
    "form feed and a line separator in strings": (
        "from twisted.internet.defer import inlineCallbacks\n\nX = 'a\\x0cb\u2028c'\n\n\n"
        "@inlineCallbacks\ndef f(d):\n    '''doc \x0c with a form feed'''\n    x = yield d\n    return x\n"
    ),
    "CRLF line ends": (
        "from twisted.internet import defer\r\n\r\n\r\nclass A:\r\n    @defer.inlineCallbacks\r\n"
        "    def f(self, d):\r\n        yield d\r\n        defer.returnValue(1)\r\n"
    ),
    "no newline at the end": (
        "from twisted.internet.defer import inlineCallbacks\n\n\n@inlineCallbacks\ndef f(d):\n    yield d"
    ),
    "a generator under a top-level if (the head holds a unit)": (
        "import sys\nfrom twisted.internet.defer import inlineCallbacks\n\nif sys.platform:\n"
        "    @inlineCallbacks\n    def f(d):\n        yield d\n\n\ndef g():\n    pass\n"
    ),
    "an import to drop below the first def": (
        "import os\n\n\ndef g():\n    pass\n\n\nfrom twisted.internet.defer import inlineCallbacks\n\n\n"
        "@inlineCallbacks\ndef f(d):\n    yield d\n"
    ),
    "nested generators, one of them left unchanged": (
        "from twisted.internet import defer\n\n\n@defer.inlineCallbacks\ndef outer(d):\n"
        "    @defer.inlineCallbacks\n    def inner(e):\n        yield e\n"
        "    def gen():\n        yield 1\n    yield inner(d)\n    defer.returnValue(list(gen()))\n\n\n"
        "@defer.inlineCallbacks\ndef broken(d):\n    cb = lambda: (yield d)\n    yield cb()\n"
    ),
    "continuation lines of a header, a comment above the def": (
        "from twisted.internet.defer import inlineCallbacks  # the driver\n# a comment\n\n\n"
        "class B:\n    # about f\n    @inlineCallbacks\n    def f(self, a,\n          b):  # trailing\n"
        "        r = yield (a)\n        yield  b\n\n    # after f\n"
    ),
    "statements nothing looks into, kept out of the parse (multi-line, comments, CRLF)": (
        "from twisted.internet import defer\r\n\r\n\r\n@defer.inlineCallbacks\r\ndef f(self, d):\r\n"
        "    \"doc\"\r\n    x = compute(1,\r\n\r\n                2)  # trailing\r\n    self.log('a')\r\n"
        "    if x:\r\n        e = defer.Deferred()\r\n        other = [\r\n            1]\r\n        yield e\r\n"
        "    else:\r\n        e = x; yield e\r\n    r = self.call()\r\n    yield r\r\n    defer.returnValue(x)\r\n"
    ),
    "compound statements nothing looks into, and one that binds a name a yield awaits": (
        "from twisted.internet import defer\n\n\n@defer.inlineCallbacks\ndef f(self, items):\n"
        "    if not items:  # nothing here is awaited\n        self.log('none')\n    else:\n"
        "        for i in items:\n            self.seen.add(i)\n"
        "    try:\n        d = fetch(items)\n    except KeyError:\n        d = None\n"
        "    with self.lock:\n        import os\n        self.pid = os.getpid()\n"
        "    yield d\n    defer.returnValue(len(items))\n"
    ),
    "nested imports: one of a name the rewrite makes unused, one of a name still used": (
        "from twisted.internet import defer\n\n\ndef plain():\n"
        "    from twisted.internet.defer import succeed\n    return succeed(1)\n\n\n"
        "@defer.inlineCallbacks\ndef f(d):\n    from twisted.internet.defer import returnValue\n"
        "    x = yield d\n    returnValue(x)\n"
    ),
    "a nested import that binds no name the rewrite makes unused (only the head is parsed for imports)": (
        "from twisted.internet import defer\n\n\ndef plain():\n"
        "    from twisted.internet.defer import succeed\n    return succeed(1)\n\n\n"
        "@defer.inlineCallbacks\ndef f(d):\n    x = yield d\n    defer.returnValue(x)\n"
    ),
}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.parametrize("unknown", ["helper", "report"])
def test_same_as_the_whole_module(path: Path, unknown: str) -> None:
    source = path.read_text(encoding="utf-8")
    sparse = prepare(source, "twisted").rewrite(unknown_yields=unknown)
    whole = prepare(source, "twisted", sparse=False).rewrite(unknown_yields=unknown)
    assert (sparse.code, sparse.reports, sparse.helpers, sparse.converted) == \
        (whole.code, whole.reports, whole.helpers, whole.converted)


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_cases(name: str) -> None:
    source = EDGE_CASES[name]
    prepared = prepare(source, "twisted")
    assert prepared.units is not None  # the sparse path took it
    sparse, whole = prepared.rewrite(), prepare(source, "twisted", sparse=False).rewrite()
    assert sparse.converted  # there was something to do
    assert (sparse.code, sparse.reports, sparse.helpers) == (whole.code, whole.reports, whole.helpers)


def test_statements_nothing_looks_into_are_parsed_as_placeholders() -> None:
    source = EDGE_CASES["statements nothing looks into, kept out of the parse (multi-line, comments, CRLF)"]
    prepared = prepare(source, "twisted")
    assert prepared.units is not None
    (unit,) = prepared.units
    # the docstring, the multi-line call, self.log(...), other = [...]; not e = ... nor r = ... (yielded)
    assert sorted(unit.kept.values()) == [(6, 6), (7, 9), (10, 10), (13, 14)]
    assert "compute" not in unit.module.code  # libcst never saw it
    code = prepared.rewrite().code
    assert "_cutover_kept_" not in code
    assert "    x = compute(1,\r\n\r\n                2)  # trailing\r\n" in code
    assert "    r = self.call()\r\n    await maybe_awaitable(r)\r\n    return x\r\n" in code


def test_compound_statements_nothing_looks_into_are_one_placeholder() -> None:
    """An ``if``/``for``/``with`` with no yield, await or returnValue in it, and no mention of a name a yield
    awaits, stays out of libcst's parse as a whole; the ``try`` that assigns ``d`` (yielded) does not."""
    source = EDGE_CASES["compound statements nothing looks into, and one that binds a name a yield awaits"]
    prepared = prepare(source, "twisted")
    assert prepared.units is not None
    (unit,) = prepared.units
    assert sorted(unit.kept.values()) == [(6, 10), (15, 17)]  # the if/else and the with, whole
    assert "        d = fetch(items)\n" in unit.module.code  # the try stays: d is what a yield awaits
    assert "for i in items" not in unit.module.code and "import os" not in unit.module.code
