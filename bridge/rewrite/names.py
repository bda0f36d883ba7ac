"""Matchers for the Twisted names the rewrite looks for, spelled any of the usual ways."""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

__all__ = [
    "ASYNCIO_CALL",
    "DEFERRED",
    "DEFERRED_API",
    "DEFERRED_API_NAMES",
    "DEFER_LATER",
    "DEFER_TO_THREAD",
    "EXPRESSIONS",
    "GATHER_RESULTS",
    "INLINE_CALLBACKS",
    "INLINE_CALLBACKS_NAMES",
    "LOOPING_CALL",
    "REACTOR_CALL_LATER",
    "RETURN_VALUE",
    "RETURN_VALUE_NAMES",
    "call_named",
    "calls_one_of",
    "dotted",
    "dotted_text",
]


def dotted(path: str) -> m.BaseExpressionMatcher:
    """``a.b.c`` as a matcher of nested attributes."""
    head, *rest = path.split(".")
    node: m.BaseExpressionMatcher = m.Name(head)
    for part in rest:
        node = m.Attribute(value=node, attr=m.Name(part))
    return node


def _spellings(module: str, name: str) -> m.BaseMatcherNode:
    """``name``, ``<last part of module>.name`` or ``<module>.name``: how Twisted code imports things."""
    short = module.rsplit(".", 1)[-1]
    return m.Name(name) | dotted(f"{short}.{name}") | dotted(f"{module}.{name}")


INLINE_CALLBACKS = _spellings("twisted.internet.defer", "inlineCallbacks")
RETURN_VALUE = _spellings("twisted.internet.defer", "returnValue")
DEFERRED = _spellings("twisted.internet.defer", "Deferred")
GATHER_RESULTS = _spellings("twisted.internet.defer", "gatherResults")
DEFER_TO_THREAD = _spellings("twisted.internet.threads", "deferToThread")
DEFER_LATER = _spellings("twisted.internet.task", "deferLater")
LOOPING_CALL = _spellings("twisted.internet.task", "LoopingCall")
REACTOR_CALL_LATER = m.Attribute(value=m.Name("reactor"), attr=m.Name("callLater"))
DEFERRED_API = m.Name("deferred_api") | dotted("bridge.deferred_api")
ASYNCIO_CALL = m.Attribute(value=m.Name("asyncio"), attr=m.Name())


def dotted_text(expr: cst.BaseExpression) -> str | None:
    """``a.b.c`` as a string, for a chain of attributes on a name (None for anything else); as a matcher of
    :func:`dotted` sees it (parentheses do not count), at a fraction of its cost."""
    parts: list[str] = []
    while type(expr) is cst.Attribute:
        parts.append(expr.attr.value)  # type: ignore[attr-defined]
        expr = expr.value  # type: ignore[attr-defined]
    if type(expr) is not cst.Name:
        return None
    parts.append(expr.value)  # type: ignore[attr-defined]
    return ".".join(reversed(parts))


def _spelled(module: str, name: str) -> frozenset[str]:
    return frozenset({name, f"{module.rsplit('.', 1)[-1]}.{name}", f"{module}.{name}"})


RETURN_VALUE_NAMES = _spelled("twisted.internet.defer", "returnValue")
INLINE_CALLBACKS_NAMES = _spelled("twisted.internet.defer", "inlineCallbacks")  # what INLINE_CALLBACKS matches
DEFERRED_API_NAMES = frozenset({"deferred_api", "bridge.deferred_api"})  # what DEFERRED_API matches


def calls_one_of(node: cst.CSTNode, names: frozenset[str]) -> bool:
    """Whether ``node`` is a call of a function spelled as one of ``names``."""
    return type(node) is cst.Call and dotted_text(node.func) in names  # type: ignore[attr-defined]


def call_named(node: cst.CSTNode, matcher: m.BaseMatcherNode) -> bool:
    """Whether ``node`` is a call of the function ``matcher`` matches."""
    return isinstance(node, cst.Call) and m.matches(node.func, matcher)


def _subclasses(base: type) -> frozenset[type]:
    found: set[type] = set()
    todo = [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return frozenset(found)


EXPRESSIONS = _subclasses(cst.BaseExpression)  # ``type(node) in EXPRESSIONS``: isinstance on an ABC is slow
