"""A read-only walk over a libcst tree, several times cheaper than ``node.visit(visitor)``.

libcst's ``visit`` rebuilds (and validates) every node it passes, even for a
visitor that changes nothing. This walk only reads: it calls the visitor's
``on_visit`` (so its ``visit_<Node>`` methods) and ``on_leave`` in the same
order as libcst, skipping whitespace, brackets and punctuation, which hold no
code. Children come in source order: the few nodes whose fields are declared
in another order (``x if test else y``, a ``def``'s decorators) are listed.
"""

from __future__ import annotations

import dataclasses

import libcst as cst

__all__ = ["walk"]

_SKIP = ("whitespace", "lpar", "rpar", "leading_lines", "lines_after_decorators", "header", "footer", "semicolon",
         "comma", "lbracket", "rbracket", "lbrace", "rbrace", "equal", "colon", "indent", "newline",
         "trailing_whitespace", "empty_lines", "first_line", "last_line", "dot", "operator", "star")
_SOURCE_ORDER: dict[type[cst.CSTNode], tuple[str, ...]] = {
    cst.IfExp: ("body", "test", "orelse"),
    cst.ExceptHandler: ("type", "name", "body"),
    cst.ExceptStarHandler: ("type", "name", "body"),
    cst.FunctionDef: ("decorators", "asynchronous", "name", "type_parameters", "params", "returns", "body"),
    cst.ClassDef: ("decorators", "name", "type_parameters", "bases", "keywords", "body"),
    cst.Arg: ("keyword", "value"),
}
_FIELDS: dict[type[cst.CSTNode], tuple[str, ...]] = {}


def _fields(kind: type[cst.CSTNode]) -> tuple[str, ...]:
    found = _FIELDS.get(kind)
    if found is None:
        names = [f.name for f in dataclasses.fields(kind) if not f.name.startswith(_SKIP)]  # type: ignore[arg-type]
        order = _SOURCE_ORDER.get(kind)
        if order is not None:
            names = [n for n in order if n in names] + [n for n in names if n not in order]
        found = _FIELDS[kind] = tuple(names)
    return found


_IS_NODE: dict[type, bool] = {}  # type -> whether it is a CSTNode (isinstance on libcst's abstract base is slow)


def _is_node(value: object) -> bool:
    kind = type(value)
    found = _IS_NODE.get(kind)
    if found is None:
        found = _IS_NODE[kind] = isinstance(value, cst.CSTNode)
    return found


def walk(node: cst.CSTNode, visitor: cst.CSTVisitor) -> None:
    """Visit ``node`` and what is under it with ``visitor``, without rebuilding anything."""
    if visitor.on_visit(node):
        for name in _fields(type(node)):
            value = getattr(node, name)
            if type(value) is tuple or type(value) is list:
                for child in value:
                    if _is_node(child):
                        walk(child, visitor)
            elif _is_node(value):
                walk(value, visitor)
    visitor.on_leave(node)
