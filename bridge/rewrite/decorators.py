"""Decorators stacked on a converted function: which keep their meaning, which a person must check.

For ``--target twisted`` a converted function still returns a Deferred at once
and runs its body at once up to the first wait, as ``inlineCallbacks`` did, so a
decorator *above* it (``mock.patch``, a retry wrapper, a logger) sees the same
call as before: nothing to report. A decorator *below* it (between
``@inlineCallbacks`` and ``def``) wrapped a generator function and now wraps an
``async def``: reported unless known to be transparent.

For ``--target asyncio`` the function becomes a plain coroutine function: a
decorator above now gets a coroutine back from the call instead of a Deferred.
``mock.patch`` and its forms are handled by ``mock`` itself (they patch for the
whole awaited call of a coroutine function); the rest is reported unless
transparent.
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from .names import DEFERRED_API, INLINE_CALLBACKS, dotted

__all__ = ["decorator_name", "needs_review"]

_TRANSPARENT = (
    m.Name("staticmethod") | m.Name("classmethod") | m.Name("abstractmethod") | dotted("abc.abstractmethod")
    | m.Name("override") | dotted("typing.override") | dotted("typing_extensions.override")
    | m.Name("deferred_api") | dotted("bridge.deferred_api")
)
_PATCHERS = ("patch", "patch.object", "patch.dict", "patch.multiple")


def _base(expr: cst.BaseExpression) -> cst.BaseExpression:
    return expr.func if isinstance(expr, cst.Call) else expr


def decorator_name(dec: cst.Decorator) -> str:
    return cst.Module(body=[]).code_for_node(_base(dec.decorator))


def _is_patcher(dec: cst.Decorator) -> bool:
    target = _base(dec.decorator)
    options: list[m.BaseMatcherNode] = []
    for name in _PATCHERS:
        options += [dotted(name), dotted(f"mock.{name}"), dotted(f"unittest.mock.{name}")]
    return any(m.matches(target, option) for option in options)


def _transparent(dec: cst.Decorator) -> bool:
    target = _base(dec.decorator)
    return (m.matches(target, _TRANSPARENT) or m.matches(target, m.Attribute(attr=m.Name("setter")))
            or m.matches(target, dotted("pytest.mark") | m.Attribute(value=dotted("pytest.mark"))))


def needs_review(decorators: list[cst.Decorator], target: str) -> list[tuple[cst.Decorator, str]]:
    """The decorators of a function about to be converted that change meaning, each with why."""
    marker = next((i for i, d in enumerate(decorators)
                   if m.matches(d.decorator, INLINE_CALLBACKS | DEFERRED_API)), None)
    if marker is None:
        return []
    found: list[tuple[cst.Decorator, str]] = []
    for i, dec in enumerate(decorators):
        if i == marker or _transparent(dec):
            continue
        if i > marker:
            found.append((dec, "is below the Twisted decorator: it wrapped a generator function and now wraps an "
                               "async def; check that it passes the coroutine through"))
        elif target == "asyncio" and not _is_patcher(dec):
            found.append((dec, "wraps the call, which now returns a coroutine (not a Deferred) and runs nothing "
                               "until awaited; check it awaits, or keep a Deferred API with @deferred_api"))
    return found
