"""Line numbers from Python's own ``ast``, which costs a fraction of libcst's positions.

libcst computes positions by generating the whole module's code once more; for
most files the rewrite needs only a few lines (its helper awaits, a decorator,
a header's column), so they are read from an ``ast`` of the same source. The
k-th function in libcst's visit order is the k-th ``def`` of the source, and
the k-th ``yield`` of a function's own scope is the k-th in source order, in
both trees.
"""

from __future__ import annotations

import ast
import re

__all__ = ["AstLines", "dotted_name", "nodes_of", "patched_names", "twisted_kinds"]

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp, ast.DictComp,
           ast.GeneratorExp)
_SCOPE_TYPES = frozenset(_SCOPES)  # no subclasses among them: ``type(node) in`` is the same test
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _own_yields(fn: ast.AST) -> list[ast.Yield]:
    found: list[ast.Yield] = []
    todo = _children(fn)
    while todo:
        node = todo.pop()
        kind = type(node)
        if kind in _SCOPE_TYPES:
            continue
        if kind is ast.Yield:
            found.append(node)  # type: ignore[arg-type]
        todo += _children(node)
    return sorted(found, key=lambda y: (y.lineno, y.col_offset))


def _children(node: ast.AST) -> list[ast.AST]:
    """``list(ast.iter_child_nodes(node))``, without a generator per node."""
    found: list[ast.AST] = []
    for name in node._fields:
        value = getattr(node, name, None)
        if type(value) is list:
            found += [child for child in value if isinstance(child, ast.AST)]
        elif isinstance(value, ast.AST):
            found.append(value)
    return found


def nodes_of(tree: ast.AST) -> list[ast.AST]:
    """``list(ast.walk(tree))``, the same nodes in the same order, at about half its cost (no generator
    per node, no ``iter_fields`` pairs)."""
    found = [tree]
    append, node_type = found.append, ast.AST
    for node in found:  # grows while it is read: breadth first, as ast.walk
        for name in node._fields:
            value = getattr(node, name, None)
            if type(value) is list:
                for child in value:
                    if isinstance(child, node_type):
                        append(child)
            elif isinstance(value, node_type):
                append(value)
    return found


class AstLines:
    """The functions of one module's ``ast``, in source order."""

    def __init__(self, tree: ast.Module, source: str, parsed: bool = True) -> None:
        self.tree, self.source, self.parsed = tree, source, parsed  # parsed: False if Python's parser refused it
        self.nodes = nodes_of(tree)  # one walk, for every pass over the module that needs one
        self.functions = sorted((n for n in self.nodes if isinstance(n, _FUNCTIONS)),
                                key=lambda n: (n.lineno, n.col_offset))
        self._lines: list[str] | None = None

    def function(self, k: int, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        """The k-th function, if it is the one named ``name`` (else the trees disagree: None)."""
        if k < len(self.functions) and self.functions[k].name == name:
            return self.functions[k]
        return None

    def yield_lines(self, fn: ast.AST) -> list[int]:
        return [y.lineno for y in _own_yields(fn)]

    def paren_column(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int | None:
        """0-based column of the ``(`` after the function's name, on its ``def`` line."""
        if self._lines is None:
            self._lines = self.source.splitlines()
        line = self._lines[fn.lineno - 1]
        found = re.compile(rf"def\s+{re.escape(fn.name)}\s*\(").search(line, fn.col_offset)
        return found.end() - 1 if found else None


def dotted_name(node: ast.expr) -> str:
    """``a.b.c`` for a chain of attributes on a name, else ""."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


_IC = {"inlineCallbacks", "defer.inlineCallbacks", "twisted.internet.defer.inlineCallbacks"}
_DEFERRED_API = {"deferred_api", "bridge.deferred_api"}


def twisted_kinds(tree: ast.Module) -> tuple[dict[str, str], dict[str, tuple[list[str], dict[str, str]]]]:
    """What :class:`~bridge.rewrite.index.FileIndex` holds for the twisted target, from ``ast`` alone.

    For that target a function's kind depends on its decorators only (an
    ``@inlineCallbacks`` function returns a Deferred whether it converts or not),
    so files with nothing to convert are indexed without libcst.
    """

    def kind(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
        names = {dotted_name(d.func if isinstance(d, ast.Call) else d) for d in fn.decorator_list}
        if names & _IC or (isinstance(fn, ast.AsyncFunctionDef) and names & _DEFERRED_API):
            return "deferred"
        return "coroutine" if isinstance(fn, ast.AsyncFunctionDef) else "plain"

    functions: dict[str, str] = {}
    classes: dict[str, tuple[list[str], dict[str, str]]] = {}
    for stmt in tree.body:
        if isinstance(stmt, _FUNCTIONS):
            functions[stmt.name] = kind(stmt)
        elif isinstance(stmt, ast.ClassDef):
            methods = {s.name: kind(s) for s in stmt.body if isinstance(s, _FUNCTIONS)}
            bases = [ast.unparse(b) for b in stmt.bases]
            classes.setdefault(stmt.name, (bases, methods))
    return functions, classes


_PATCHERS = {"patch", "mock.patch", "unittest.mock.patch"}
_OBJECT_PATCHERS = {"patch.object", "mock.patch.object", "unittest.mock.patch.object", "setattr",
                    "monkeypatch.setattr", "self.patch"}


_LAST_PARTS = frozenset({"patch", "object", "setattr"})  # how every spelling above ends


def _last_part(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.rsplit(".", 1)[-1] or None
    return None


def patched_names(tree: ast.Module, nodes: list[ast.AST] | None = None) -> set[str]:
    """Names this module replaces at run time: ``mock.patch("a.b.name")``, ``patch.object(x, "name")``,
    ``setattr(x, "name", v)``, trial's ``self.patch(x, "name", v)`` and ``x.name = v``.

    A test that patches a converted function may make it return a plain value,
    which ``inlineCallbacks`` took and ``await`` does not: a call of such a name
    is not known to be awaitable, wherever it is made.
    """
    found: set[str] = set()
    call, assign, ann_assign, attribute, name_node = ast.Call, ast.Assign, ast.AnnAssign, ast.Attribute, ast.Name
    for node in nodes if nodes is not None else nodes_of(tree):
        kind = type(node)
        if kind is call:
            callee = node.func  # type: ignore[attr-defined]
            last = callee.attr if type(callee) is attribute else callee.id if type(callee) is name_node else ""
            if last not in _LAST_PARTS:
                continue  # no patcher (most calls): no need to spell it out
            func = dotted_name(callee)
            if func in _PATCHERS or (func.endswith(".setattr") and len(node.args) < 3):
                name = _last_part(node.args[0]) if node.args else None
            elif func in _OBJECT_PATCHERS or func.endswith(".setattr"):
                name = _last_part(node.args[1]) if len(node.args) > 1 else None
            else:
                continue
            if name:
                found.add(name)
        elif kind is assign or kind is ann_assign:
            targets = node.targets if kind is assign else [node.target]  # type: ignore[attr-defined]
            found.update(t.attr for t in targets if isinstance(t, ast.Attribute))
    return found
