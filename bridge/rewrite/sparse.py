"""The twisted target on the functions that change only: ``ast`` for the module, libcst for those functions.

A libcst parse and code generation of a whole module cost several times what
Python's own ``ast`` does, and for the twisted target most of a module never
changes: only the ``@inlineCallbacks`` generators do. So the module is indexed
and planned from its ``ast`` (imports, classes, the kinds of its functions, the
patched names), and libcst parses only the text of each outermost
``@inlineCallbacks`` generator (a *unit*). Each unit is rewritten on its own and
its text put back in place, line for line; the import fix-up parses only the
module's head (everything before its first top-level ``def`` or ``class``).

The result is the same code, byte for byte, as a rewrite of the whole module
would give. Where that is not certain (the trees disagree on a function,
imports to fix below the head, nested imports), :func:`plan` returns None or
:func:`splice_imports` parses the whole module, as the full path does.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

import libcst as cst
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider

from ..errors import CutoverError
from .ast_lines import AstLines, dotted_name, patched_names
from .imports import Names, fix_imports
from .index import ClassInfo

__all__ = ["Unit", "function_defs", "plan", "splice", "splice_imports"]

_IC = frozenset({"inlineCallbacks", "defer.inlineCallbacks", "twisted.internet.defer.inlineCallbacks"})
_DEFERRED_API = frozenset({"deferred_api", "bridge.deferred_api"})
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_PREFIX = "if 1:\n"  # an indented unit parses as the body of this
_HEAD_END = "class _CutoverHeadEnd: pass\n"  # stands for the module's first def or class while its head is fixed
_DROPPABLE = ("twisted", "bridge")


class Mismatch(CutoverError):
    """The two trees disagree about a unit: rewrite the whole module instead."""


@dataclass
class Unit:
    """One outermost ``@inlineCallbacks`` generator: lines ``first``..``last`` (1-based) of the source, parsed."""

    first: int
    last: int
    module: cst.Module
    prefixed: bool
    functions: list[cst.FunctionDef]  # in source order, as ``asts``
    asts: list[ast.FunctionDef | ast.AsyncFunctionDef]
    kept: dict[int, tuple[int, int]] = field(default_factory=dict)  # placeholder -> the lines it stands for
    _positions: Any = None

    @property
    def delta(self) -> int:
        """What to add to a line of the unit's text for the line of the source."""
        return self.first - 1 - (1 if self.prefixed else 0)

    def position(self, node: cst.CSTNode) -> CodeRange | None:
        if self._positions is None:
            self._positions = MetadataWrapper(self.module, unsafe_skip_copy=True).resolve(PositionProvider)
        return self._positions.get(node)  # type: ignore[no-any-return]


class UnitLines:
    """Lines of nodes of any unit, in the source's numbering (positions are computed on first use only)."""

    def __init__(self) -> None:
        self.units: list[Unit] = []

    def position(self, node: cst.CSTNode) -> CodeRange:
        for unit in self.units:
            found = unit.position(node)
            if found is not None:
                return found
        raise Mismatch(f"no unit holds {type(node).__name__}")

    def __call__(self, node: cst.CSTNode) -> int:
        for unit in self.units:
            found = unit.position(node)
            if found is not None:
                return found.start.line + unit.delta
        raise Mismatch(f"no unit holds {type(node).__name__}")


_SUITES = ("body", "orelse", "handlers", "finalbody", "cases")  # where statements hold statements


def function_defs(node: cst.CSTNode, found: list[cst.FunctionDef]) -> list[cst.FunctionDef]:
    """The ``def``s in ``node``, in source order, through statement bodies only (a def is a statement):
    far cheaper than a libcst visit, which rebuilds every node."""
    kind = type(node)
    if kind is cst.SimpleStatementLine or kind is cst.EmptyLine:
        return found  # most statements: checked first, as isinstance on libcst's abstract bases is slow
    if kind is cst.FunctionDef:
        found.append(node)  # type: ignore[arg-type]
    elif not isinstance(node, cst.Module | cst.BaseCompoundStatement | cst.BaseSuite | cst.Else | cst.Finally
                        | cst.ExceptHandler | cst.ExceptStarHandler | cst.MatchCase):
        return found  # a simple statement line: no def in it
    for attr in _SUITES:
        value = getattr(node, attr, None)
        if isinstance(value, cst.CSTNode):
            function_defs(value, found)
        elif isinstance(value, list | tuple):
            for child in value:
                function_defs(child, found)
    return found


_KEEP = "_cutover_kept_"  # a placeholder statement: ``_cutover_kept_<k>`` stands for the k-th kept statement
_KEPT = re.compile(rf"[ \t]*{_KEEP}(\d+)(?:\r\n|\r|\n)?\Z")
_SIMPLE = (ast.Expr, ast.Return, ast.Raise, ast.Assert, ast.Delete, ast.Pass, ast.Break, ast.Continue, ast.Import,
           ast.ImportFrom)  # imports: nothing in a unit reads them (the import fix-up works on the whole text)
_COMPOUND = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try, ast.Match) + (
    (ast.TryStar,) if hasattr(ast, "TryStar") else ())
_SCOPE_STATEMENTS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Global, ast.Nonlocal)
_ASSIGNS = (ast.Assign, ast.AugAssign, ast.AnnAssign)
_BINDS = (ast.Yield, ast.YieldFrom, ast.NamedExpr, ast.Await)
_STATEMENT_SUITES = ("body", "orelse", "finalbody")


def _alone(stmt: ast.stmt, lines: list[str]) -> bool:
    """Alone on its lines: nothing before it, only a comment after."""
    if stmt.end_lineno is None or stmt.end_col_offset is None:
        return False
    head = lines[stmt.lineno - 1].encode()[:stmt.col_offset]
    tail = lines[stmt.end_lineno - 1].encode()[stmt.end_col_offset:].strip()
    return not head.strip() and (not tail or tail.startswith(b"#"))


def _names(node: ast.AST) -> set[str]:
    """Every name in ``node``, attribute names too (libcst counts ``x`` in ``self.x = v`` as a bound name)."""
    return {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node) if isinstance(n, ast.Name | ast.Attribute)}


class Marks:
    """Where, in one module, the nodes are that keep a statement in the parse: found in one pass over its ``ast``."""

    def __init__(self, nodes: list[ast.AST]) -> None:
        self.lines: set[int] = set()  # first lines of yields, awaits, := and returnValue names
        self.yields: list[ast.Yield] = []
        for node in nodes:
            if isinstance(node, _BINDS):
                self.lines.add(node.lineno)  # type: ignore[attr-defined]
                if isinstance(node, ast.Yield):
                    self.yields.append(node)
            elif (isinstance(node, ast.Name) and node.id == "returnValue") or (
                    isinstance(node, ast.Attribute) and node.attr == "returnValue"):
                self.lines.add(node.lineno)


def _unmarked(stmt: ast.stmt, marks: Marks) -> bool:
    return not any(line in marks.lines for line in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))


def _unchanged(stmt: ast.stmt, lines: list[str], marks: Marks) -> bool:
    """A simple statement the rewrite never changes: no yield, no returnValue, alone on its lines (so every
    node that starts on its lines is its own)."""
    return isinstance(stmt, _SIMPLE + _ASSIGNS) and _alone(stmt, lines) and _unmarked(stmt, marks)


def _opaque(stmt: ast.stmt, lines: list[str], marks: Marks, wanted: set[str]) -> bool:
    """A compound statement (``if``, ``for``, ``with``, ``try``...) nothing looks into: no yield, await or
    returnValue, no def or class (the trees' functions must match), no global/nonlocal, and no mention of a
    name the analysis consults (so no binding of one), alone on its lines."""
    if not isinstance(stmt, _COMPOUND) or not _alone(stmt, lines) or not _unmarked(stmt, marks):
        return False
    for node in ast.walk(stmt):
        if isinstance(node, _SCOPE_STATEMENTS):
            return False
        if isinstance(node, ast.Name | ast.Attribute) and (node.id if isinstance(node, ast.Name) else node.attr) in wanted:
            return False
        if isinstance(node, ast.ExceptHandler) and node.name in wanted:
            return False
    return True


def _elidable(fn: ast.FunctionDef, lines: list[str], marks: Marks) -> list[ast.stmt]:
    """The statements of ``fn`` (nested scopes too) that neither the rewrite nor its analysis needs to see.

    The analysis reads the values assigned to local names, for the names a ``yield`` awaits
    (``d = Deferred(); ...; yield d``): an assignment is kept when it binds a name that a yield
    or a kept assignment mentions.
    """
    found: list[ast.stmt] = []
    wanted: set[str] = set()

    def visit(body: list[ast.stmt], whole: bool) -> None:
        for stmt in body:
            if _unchanged(stmt, lines, marks) or (whole and _opaque(stmt, lines, marks, wanted)):
                found.append(stmt)
                continue
            for attr in _STATEMENT_SUITES:
                visit(getattr(stmt, attr, []), whole)
            for handler in getattr(stmt, "handlers", []):
                visit(handler.body, whole)
            for case in getattr(stmt, "cases", []):
                visit(case.body, whole)

    visit(fn.body, False)
    last = fn.end_lineno or fn.lineno
    for node in marks.yields:
        if fn.lineno <= node.lineno <= last and node.value is not None:
            wanted |= _consulted(node.value)
    assigns = {id(s): s for s in found if isinstance(s, _ASSIGNS)}
    kept: set[int] = set()
    changed = True
    while changed:
        changed = False
        for key, stmt in assigns.items():
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if key not in kept and set().union(*map(_names, targets)) & wanted:
                kept.add(key)
                if stmt.value is not None and not isinstance(stmt, ast.AugAssign):
                    wanted |= _consulted(stmt.value)
                changed = True
    # then whole compound statements that mention none of the names consulted (inside them, the simple
    # statements the first walk found are elided all the same)
    found = []
    visit(fn.body, True)
    return [s for s in found if id(s) not in kept]


def _consulted(value: ast.expr) -> set[str]:
    """The local names whose values the analysis consults to tell whether ``value`` is awaitable: the name
    itself, or the receiver of a method call (``x.m()``: a module, unless it is a local)."""
    if isinstance(value, ast.Name):
        return {value.id}
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and isinstance(value.func.value, ast.Name):
        return {value.func.value.id}
    return set()


def _elide(fn: ast.FunctionDef, lines: list[str], first: int, last: int, marks: Marks
           ) -> tuple[str, dict[int, tuple[int, int]]]:
    """The unit's text with each statement nothing looks into in a placeholder of as many lines, so libcst parses
    (and the rewrite visits, and codegen writes) a fraction of it; the kept statements' line spans by number."""
    kept: dict[int, tuple[int, int]] = {}
    out = lines[first - 1:last]
    for stmt in _elidable(fn, lines, marks):
        start, end = stmt.lineno, stmt.end_lineno or stmt.lineno
        original = lines[start - 1]
        ending = original[len(original.rstrip("\r\n")):] or "\n"
        indent = original[:len(original) - len(original.lstrip(" \t"))]
        k = len(kept)
        kept[k] = (start, end)
        out[start - first] = f"{indent}{_KEEP}{k}{ending}"
        for at in range(start + 1, end + 1):
            line = lines[at - 1]
            out[at - first] = line[len(line.rstrip("\r\n")):] or "\n"
    return "".join(out), kept


def restore(code: str, unit: Unit, lines: list[str]) -> str:
    """The unit's rewritten code with each placeholder back as the statement's original lines."""
    if not unit.kept:
        return code
    out: list[str] = []
    skip = 0
    for line in _lines(code):
        if skip:
            skip -= 1
            if line.strip("\r\n"):
                raise Mismatch("a kept statement's lines moved in the rewrite")
            continue
        found = _KEPT.match(line) if _KEEP in line else None
        if found is None:
            out.append(line)
            continue
        start, end = unit.kept[int(found.group(1))]
        out += lines[start - 1:end]
        skip = end - start
    return "".join(out)


def _parse_unit(lines: list[str], fn: ast.FunctionDef, tree: AstLines, marks: Marks) -> Unit:
    first = min([d.lineno for d in fn.decorator_list] + [fn.lineno])
    last = fn.end_lineno or fn.lineno
    source = "".join(lines[first - 1:last])
    text, kept = _elide(fn, lines, first, last, marks) if _KEEP not in source else (source, {})
    if not text.endswith(("\n", "\r")):
        text += "\n"
    prefixed = text[:1] in (" ", "\t")
    module = cst.parse_module(_PREFIX + text if prefixed else text)
    found = function_defs(module, [])
    asts = [f for f in tree.functions if first <= f.lineno <= last]
    if [f.name for f in asts] != [f.name.value for f in found]:
        raise Mismatch(f"the functions of lines {first}-{last} differ between the trees")
    return Unit(first, last, module, prefixed, found, asts, kept)


def _decorated(fn: ast.FunctionDef | ast.AsyncFunctionDef, names: frozenset[str]) -> bool:
    return any(dotted_name(d) in names for d in fn.decorator_list)


@dataclass
class Plan:
    """What the ``ast`` walk found; the planner (a :class:`~bridge.rewrite.transform._Planner`) fills the rest."""

    units: list[Unit] = field(default_factory=list)
    lines: UnitLines = field(default_factory=UnitLines)


def plan(planner: Any, source: str, tree: AstLines) -> Plan:
    """Walk the module's ``ast`` as the planner would walk its libcst tree; units are parsed where needed.

    ``planner`` is a ``_Planner`` for the twisted target whose ``line`` is this plan's
    :class:`UnitLines`; its ``_classify`` logic runs here in ``ast`` terms, and its
    ``plan_generator`` on each generator's libcst node.
    """
    result = Plan()
    planner.line = result.lines
    lines = _lines(source)
    mapping: dict[int, cst.FunctionDef] = {}  # id of an ast function -> its libcst node, inside a unit
    marks = Marks(tree.nodes)
    wrapped = planner.wrapped_names
    for node in tree.nodes:
        if isinstance(node, ast.Call) and dotted_name(node.func) in _IC:
            planner.reports.append(_report(node.lineno, "inlineCallbacks applied other than as a decorator; "
                                                        "left unchanged"))
            if node.args and isinstance(node.args[0], ast.Name):
                wrapped.add(node.args[0].id)

    def visit(node: ast.AST, scopes: list[tuple[str, str]], in_unit: bool) -> None:
        """Statements only: imports, classes and defs are statements (calls were found above)."""
        if isinstance(node, ast.Import):
            for alias in node.names:
                planner.imported.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            bound = [a.asname or a.name for a in node.names if a.name != "*"]
            planner.imported.update(bound)
            if not node.level and node.module and node.module.startswith("twisted"):
                planner.twisted_names.update(bound)
        elif isinstance(node, ast.ClassDef):
            if not scopes:
                bases = [_segment(lines, b) for b in node.bases]
                planner.index.classes.setdefault(node.name, ClassInfo(bases=bases))
            scopes = [*scopes, ("class", node.name)]
        elif isinstance(node, _FUNCTIONS):
            in_unit = _function(node, scopes, in_unit)
            scopes = [*scopes, ("def", node.name)]
        for attr in _SUITES:
            for child in getattr(node, attr, ()):
                visit(child, scopes, in_unit)

    def _function(fn: ast.FunctionDef | ast.AsyncFunctionDef, scopes: list[tuple[str, str]], in_unit: bool) -> bool:
        ic = _decorated(fn, _IC)
        if not ic:
            kind = "coroutine" if isinstance(fn, ast.AsyncFunctionDef) else "plain"
            if isinstance(fn, ast.AsyncFunctionDef):
                planner.async_names.add(fn.name)
                if _decorated(fn, _DEFERRED_API):
                    kind = "deferred"
            _record(planner, fn.name, scopes, kind)
            return in_unit
        _record(planner, fn.name, scopes, "deferred")
        if isinstance(fn, ast.AsyncFunctionDef):
            planner.reports.append(_report(fn.lineno, f"{fn.name}(): inlineCallbacks on an async def; left unchanged"))
            return in_unit
        if fn.name in wrapped:
            planner.reports.append(_report(fn.lineno, f"{fn.name}(): also passed to inlineCallbacks(); left unchanged"))
            return in_unit
        if not in_unit:
            unit = _parse_unit(lines, fn, tree, marks)
            result.units.append(unit)
            result.lines.units.append(unit)
            mapping.update(zip(map(id, unit.asts), unit.functions, strict=True))
        node = mapping[id(fn)]
        planner.scopes = scopes
        planner.ast_nodes[node] = fn
        planner.plan_generator(node)
        return True

    visit(tree.tree, [], False)
    planner.index.patched = patched_names(tree.tree, tree.nodes)
    return result


_LINE = re.compile(r".*?(?:\r\n|\r|\n)|.+\Z", re.DOTALL)


_OTHER_BREAKS = re.compile("[\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # where str.splitlines splits, the tokenizer not


def _lines(source: str) -> list[str]:
    """Lines with their ends, split where Python's tokenizer splits (``str.splitlines`` also splits at
    form feeds and other characters, which would put a line of ``ast`` and of this list out of step)."""
    if _OTHER_BREAKS.search(source) is None:
        return source.splitlines(True)  # the same lines, several times faster than the pattern
    return _LINE.findall(source)


def _segment(lines: list[str], node: ast.expr) -> str:
    """The source text of ``node`` (``ast.get_source_segment`` splits the whole source on every call)."""
    if node.end_lineno is None or node.end_col_offset is None:
        return ast.unparse(node)
    if node.lineno == node.end_lineno:
        return lines[node.lineno - 1].encode()[node.col_offset:node.end_col_offset].decode()
    first = lines[node.lineno - 1].encode()[node.col_offset:].decode()
    last = lines[node.end_lineno - 1].encode()[:node.end_col_offset].decode()
    return "".join([first, *lines[node.lineno:node.end_lineno - 1], last])


def _report(line: int, reason: str) -> Any:
    from .base import Report

    return Report(line, reason)


def _record(planner: Any, name: str, scopes: list[tuple[str, str]], kind: str) -> None:
    """What ``_Planner._record`` does, from the scopes of the ``ast`` walk."""
    if not scopes:
        planner.index.functions[name] = kind
    elif len(scopes) == 1 and scopes[0][0] == "class":
        planner.index.classes[scopes[0][1]].methods[name] = kind
    elif scopes[-1][0] == "def":
        seen = planner.nested.setdefault(name, kind)
        if seen != kind:
            planner.nested[name] = "plain"


def splice(source: str, units: list[Unit], rewritten: list[cst.Module]) -> str:
    """The source with each unit's lines replaced by its rewritten code."""
    lines = _lines(source)
    out: list[str] = []
    at = 0
    for unit, module in zip(units, rewritten, strict=True):
        out += lines[at:unit.first - 1]
        code = module.code
        if unit.prefixed:
            code = code[len(_PREFIX):]
        code = restore(code, unit, lines)
        if not lines[unit.last - 1].endswith(("\n", "\r")):
            code = code.rstrip("\r\n")
        out.append(code)
        at = unit.last
    out += lines[at:]
    return "".join(out)


def _head_end(tree: ast.Module) -> int | None:
    """The first line (1-based) of the module's first top-level def or class, decorators included."""
    for stmt in tree.body:
        if isinstance(stmt, (*_FUNCTIONS, ast.ClassDef)):
            return min([d.lineno for d in stmt.decorator_list] + [stmt.lineno])
    return None


def splice_imports(code: str, tree: ast.Module, units: list[Unit], before: Names, used: set[str],
                   first_party: frozenset[str]) -> str:
    """``code`` with its imports fixed (see :func:`~bridge.rewrite.imports.fix_imports`), parsing its head only.

    ``tree`` is the original's ``ast``: the head (the lines before the first def or class) is the same
    in both, as no unit starts before it. The whole module is parsed when an import to fix could be
    below the head.
    """
    end = _head_end(tree)
    # a nested import matters only if it binds a name the rewrite made unused (fix_imports drops only those)
    nested = before.nested and bool(before.nested_bound & (before.used - used))
    below = nested or end is None or any(unit.first < end for unit in units) or any(
        isinstance(stmt, ast.ImportFrom) and stmt.lineno >= end and not stmt.level
        and (stmt.module or "").startswith(_DROPPABLE) for stmt in tree.body)
    if not below:
        assert end is not None
        lines = _lines(code)
        head = "".join(lines[:end - 1])
        fixed = fix_imports(cst.parse_module(head + _HEAD_END), before, used, first_party).code
        if fixed.endswith(_HEAD_END):
            return fixed[:-len(_HEAD_END)] + "".join(lines[end - 1:])
    return fix_imports(cst.parse_module(code), before, used, first_party).code
