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

from .names import DEFERRED_API_NAMES, INLINE_CALLBACKS_NAMES, dotted_text

__all__ = ["decorator_name", "is_patcher", "needs_review", "patchers_above"]

# spelled as written (a chain of names); compared as text, which costs a fraction of a matcher
_TRANSPARENT = frozenset({"staticmethod", "classmethod", "abstractmethod", "abc.abstractmethod", "override",
                          "typing.override", "typing_extensions.override"}) | DEFERRED_API_NAMES
_PATCHERS = frozenset(f"{prefix}{name}" for name in ("patch", "patch.object", "patch.dict", "patch.multiple")
                      for prefix in ("", "mock.", "unittest.mock."))
_MARKERS = INLINE_CALLBACKS_NAMES | DEFERRED_API_NAMES


def _base(expr: cst.BaseExpression) -> cst.BaseExpression:
    return expr.func if isinstance(expr, cst.Call) else expr


def decorator_name(dec: cst.Decorator) -> str:
    return cst.Module(body=[]).code_for_node(_base(dec.decorator))


def is_patcher(dec: cst.Decorator) -> bool:
    """``@patch(...)``, ``@mock.patch.object(...)`` and the like."""
    return dotted_text(_base(dec.decorator)) in _PATCHERS


def patchers_above(decorators: list[cst.Decorator], marker: int) -> int:
    """How many patchers stand right above ``decorators[marker]``, with nothing else between."""
    count = 0
    while marker - count - 1 >= 0 and is_patcher(decorators[marker - count - 1]):
        count += 1
    return count


def _transparent(dec: cst.Decorator) -> bool:
    target = _base(dec.decorator)
    if dotted_text(target) in _TRANSPARENT or dotted_text(target) == "pytest.mark":
        return True
    return isinstance(target, cst.Attribute) and (target.attr.value == "setter"
                                                  or dotted_text(target.value) == "pytest.mark")


def needs_review(decorators: list[cst.Decorator], target: str, starts_later: bool = False
                 ) -> list[tuple[cst.Decorator, str]]:
    """The decorators of a function about to be converted that change meaning, each with why.

    ``starts_later``: the converted function returns a Deferred at once but its body starts on a later
    loop turn (a trial test behind ``@asyncio_test``), so a patch above it is undone before the body runs.
    """
    marker = next((i for i, d in enumerate(decorators)
                   if dotted_text(d.decorator) in _MARKERS), None)
    if marker is None:
        return []
    found: list[tuple[cst.Decorator, str]] = []
    for i, dec in enumerate(decorators):
        if i == marker or _transparent(dec):
            continue
        if i > marker:
            found.append((dec, "is below the Twisted decorator: it wrapped a generator function and now wraps an "
                               "async def; check that it passes the coroutine through"))
        elif starts_later and is_patcher(dec) and i < marker - patchers_above(decorators, marker):
            # the patchers right above go below @asyncio_test (see the transform); this one cannot
            found.append((dec, "patches for the call only, and behind @asyncio_test the body starts on a later "
                               "loop turn (an asyncio Task): the patch is undone before the body runs (inlineCallbacks "
                               "ran it at once); patch inside the body (with patch(...):) instead"))
        elif target == "asyncio" and not is_patcher(dec):
            found.append((dec, "wraps the call, which now returns a coroutine (not a Deferred) and runs nothing "
                               "until awaited; check it awaits, or keep a Deferred API with @deferred_api"))
    return found
