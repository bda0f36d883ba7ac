"""``@inlineCallbacks`` generators to ``async def`` functions, on libcst.

:func:`rewrite_source` has two targets, the two steps of a migration.

``target="twisted"`` (the code still runs on Twisted): each function decorated
with ``@inlineCallbacks`` (``@defer.inlineCallbacks``,
``@twisted.internet.defer.inlineCallbacks``) becomes an ``async def`` decorated
with :func:`bridge.deferred_api` in the same place, so Twisted callers still get
a Deferred and the body still starts at once, on any reactor (awaiting asyncio
futures works too, where an asyncio loop runs them). Inside it, ``yield X``
becomes ``await X`` where ``X`` is known to be awaitable (see
:mod:`bridge.rewrite.awaitables`), else ``await maybe_awaitable(X)``, listed in
:attr:`RewriteResult.helpers`; and ``returnValue(x)`` / ``defer.returnValue(x)``
becomes ``return x``.

``target="asyncio"`` (the code moves to the asyncio side): the same functions,
and those already converted (``@deferred_api async def``), become plain
``async def`` functions for asyncio callers, and their bodies stop using
Twisted; see :mod:`bridge.rewrite.to_asyncio` for what is converted and how.

What cannot be converted safely is left exactly as it is and reported with a
line number: bare ``yield``, ``yield from``, ``yield`` or ``returnValue`` inside
a nested function/lambda/class/comprehension, ``returnValue`` used other than as
a statement with one positional argument, and ``inlineCallbacks(...)`` called
rather than used as a decorator. Imports follow the code: what it now uses is
added, Twisted names it stopped using are dropped. The rewrite is idempotent
and never produces code that does not parse.

Decorators whose meaning changes with the conversion are reported (see
:mod:`bridge.rewrite.decorators`). Calls into other files are known through a
:class:`~bridge.rewrite.index.ProjectIndex` of the whole run: :func:`prepare`
parses a file once and gives its part of the index, and
:meth:`Prepared.rewrite` rewrites it once the index is complete.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import libcst as cst
import libcst.matchers as m
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider

from .ast_lines import AstLines, patched_names, twisted_kinds
from .awaitables import Assignments, Known, local_awaitables
from .base import NESTED, Report, ScopedTransformer
from .decorators import decorator_name, needs_review, patchers_above
from .imports import fix_imports, names_of
from .index import ClassInfo, FileIndex, ProjectIndex
from .layout import realign_parameters
from .names import (DEFERRED_API_NAMES, EXPRESSIONS, INLINE_CALLBACKS, INLINE_CALLBACKS_NAMES, RETURN_VALUE_NAMES,
                    calls_one_of, dotted_text)
from .sparse import Mismatch, Unit, function_defs, splice, splice_imports
from .sparse import plan as sparse_plan
from .to_asyncio import AsyncioPlanner, WrapCallbacks, asyncio_body, awaits
from .walk import walk

__all__ = ["Prepared", "quick_index", "RewriteResult", "Target", "UnknownYields", "async_functions", "prepare",
           "rewrite_source"]

Target = Literal["twisted", "asyncio"]
UnknownYields = Literal["helper", "report"]  # a yield of what may not be awaitable: helper, or plain await + report
LineOf = Callable[[cst.CSTNode], int]
FinishBody = Callable[[cst.BaseSuite, cst.FunctionDef], cst.BaseSuite]  # (body, the original function)


@dataclass
class RewriteResult:
    """The new code; ``reports`` are for a person to finish, ``helpers`` the lines awaited through
    ``maybe_awaitable`` (to drop once the type is known); ``converted`` counts converted functions."""

    code: str
    changed: bool
    reports: list[Report] = field(default_factory=list)
    helpers: list[Report] = field(default_factory=list)
    converted: int = 0


_TRIAL_FIXTURES = frozenset({"setUp", "tearDown"})
_CALLED_IC = re.compile(r"inlineCallbacks\s*\)?\s*\(")  # ``inlineCallbacks(f)``, written as a call somewhere
_CARRIERS = EXPRESSIONS | {cst.SimpleStatementLine}  # what the body rewrite skips unless it holds a change


def _is_decorator(dec: cst.Decorator, names: frozenset[str]) -> bool:
    return dotted_text(dec.decorator) in names  # a matcher's test, at a fraction of its cost


def has_inline_callbacks(fn: cst.FunctionDef) -> bool:
    return any(_is_decorator(d, INLINE_CALLBACKS_NAMES) for d in fn.decorators)


def _has_deferred_api(fn: cst.FunctionDef) -> bool:
    return fn.asynchronous is not None and any(_is_decorator(d, DEFERRED_API_NAMES) for d in fn.decorators)


def _simple_return_value(call: cst.Call) -> bool:
    return len(call.args) == 1 and call.args[0].keyword is None and call.args[0].star == ""


class _Analyzer(Assignments):
    """Finds what stops one decorated function's conversion (on the original tree), and on the way its own
    ``yield``s and local assignments (for :func:`local_awaitables`)."""

    def __init__(self, line_of: LineOf, fn_name: str) -> None:
        super().__init__()
        self.line_of, self.fn_name = line_of, fn_name
        self.depth = 0
        self.yields: list[cst.Yield] = []  # of its own scope, in source order
        self.problems: list[Report] = []
        self.statement_calls: set[int] = set()  # ids of returnValue calls that are a whole statement
        self.carriers: list[cst.CSTNode] = []  # the nodes around the node visited (the body's block first)
        self.hot: set[int] = set()  # ids of those that hold a yield or returnValue of this function's own scope

    def _mark_hot(self) -> None:
        self.hot.update(map(id, self.carriers))

    def _problem(self, node: cst.CSTNode, what: str) -> None:
        self.problems.append(Report(self.line_of(node), f"{self.fn_name}(): {what}; left unchanged"))

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.FunctionDef) and has_inline_callbacks(node):
            return False  # a nested inlineCallbacks function is converted (or reported) on its own
        if type(node) in NESTED:
            self.depth += 1
        self.carriers.append(node)
        return super().on_visit(node)

    def on_leave(self, original_node: cst.CSTNode) -> None:
        # on_leave runs even for a node whose on_visit returned False
        if type(original_node) in NESTED:
            if isinstance(original_node, cst.FunctionDef) and has_inline_callbacks(original_node):
                return  # its on_visit stopped at once
            self.depth -= 1
        self.carriers.pop()
        super().on_leave(original_node)

    def visit_Expr(self, node: cst.Expr) -> None:
        if calls_one_of(node.value, RETURN_VALUE_NAMES):
            self.statement_calls.add(id(node.value))
            if not self.depth:
                self._mark_hot()

    def visit_Yield(self, node: cst.Yield) -> None:
        if not self.depth:
            self.yields.append(node)
            self._mark_hot()
        if self.depth:
            self._problem(node, "yield inside a nested function, lambda, class or comprehension")
        elif node.value is None:
            self._problem(node, "bare yield (no value)")
        elif isinstance(node.value, cst.From):
            self._problem(node, "yield from in an inlineCallbacks generator")

    def visit_Call(self, node: cst.Call) -> None:
        if not calls_one_of(node, RETURN_VALUE_NAMES):
            return
        if self.depth:
            self._problem(node, "returnValue() inside a nested function, lambda, class or comprehension")
        elif id(node) not in self.statement_calls:
            self._problem(node, "returnValue() used inside an expression")
        elif not _simple_return_value(node):
            self._problem(node, "returnValue() without exactly one positional argument")


class _BodyRewriter(ScopedTransformer):
    """``yield X`` -> ``await X`` and ``returnValue(x)`` -> ``return x``, outside nested scopes.

    With ``known`` (the twisted target), an ``X`` not known to be awaitable is
    awaited as ``maybe_awaitable(X)`` unless ``helper`` is False. ``hot``: the ids of the original
    body's nodes that hold a change; with ``strict`` the body is that original (no node was rebuilt),
    so every other node is skipped, else only statement lines and expressions are (compound
    statements may be rebuilt copies, around a nested function converted first).
    """

    def __init__(self, known: Known | None = None, helper: bool = True, hot: set[int] | None = None,
                 strict: bool = False) -> None:
        super().__init__()
        self.known, self.helper, self.hot, self.strict = known, helper, hot, strict
        self.removed: Counter[str] = Counter()  # names of the returnValue calls taken out

    def on_visit(self, node: cst.CSTNode) -> bool:
        # ``hot``: the statement lines and expressions that hold what changes; libcst rebuilds every node
        # it visits, so the rest (most of a body) is left as it is, unvisited
        go = super().on_visit(node)
        if self.hot is None or id(node) in self.hot:
            return go
        return go and not self.strict and type(node) not in _CARRIERS

    def leave_Yield(self, original_node: cst.Yield, updated_node: cst.Yield) -> cst.BaseExpression:
        if self.depth or not isinstance(updated_node.value, cst.BaseExpression):
            return updated_node
        ws = updated_node.whitespace_after_yield
        value = updated_node.value
        if self.known is not None and self.helper and not self.known.awaitable(value):
            value = cst.Call(func=cst.Name("maybe_awaitable"), args=[cst.Arg(value)])
        return cst.Await(
            expression=value,
            lpar=updated_node.lpar,
            rpar=updated_node.rpar,
            whitespace_after_await=ws if isinstance(ws, cst.SimpleWhitespace) else cst.SimpleWhitespace(" "),
        )

    def leave_Expr(self, original_node: cst.Expr, updated_node: cst.Expr) -> cst.BaseSmallStatement:
        call = updated_node.value
        if self.depth or not calls_one_of(call, RETURN_VALUE_NAMES) or not _simple_return_value(call):  # type: ignore[arg-type]
            return updated_node
        self.removed.update(dotted_names(call.func))  # type: ignore[attr-defined]
        return cst.Return(value=call.args[0].value, semicolon=updated_node.semicolon)  # type: ignore[attr-defined]


class _Lines:
    """Positions of the original tree's nodes, computed on first use only (most files never need one)."""

    def __init__(self, wrapper: MetadataWrapper) -> None:
        self.wrapper = wrapper
        self._positions: Any = None

    def position(self, node: cst.CSTNode) -> CodeRange:
        if self._positions is None:
            self._positions = self.wrapper.resolve(PositionProvider)
        return self._positions[node]  # type: ignore[no-any-return]

    def __call__(self, node: cst.CSTNode) -> int:
        return self.position(node).start.line


class _Planner(cst.CSTVisitor):
    """First pass over the original tree: which functions convert, what is reported, what becomes async,
    and this file's part of the project index."""

    def __init__(self, target: Target, lines: _Lines, source: str, tree: AstLines) -> None:
        super().__init__()
        self.target, self.line, self.source, self.tree = target, lines, source, tree
        self.order: dict[cst.FunctionDef, int] = {}  # function -> its index in source order
        self.analyzed: dict[cst.FunctionDef, _Analyzer] = {}  # converted generator -> what its walk found
        self.called_ic = True
        self.count = 0
        self.fn_class: dict[cst.FunctionDef, str | None] = {}  # converted function -> its nearest class
        self.reports: list[Report] = []
        self.convert: set[cst.FunctionDef] = set()
        self.async_names: set[str] = set()  # functions and methods that are async def after the rewrite
        self.wrapped_names: set[str] = set()  # f in ``inlineCallbacks(f)``: keep f a generator
        self.index = FileIndex()
        self.twisted_names: set[str] = set()  # names imported from twisted modules
        self.imported: set[str] = set()  # every name an import binds (a receiver that may be a module)
        self.scopes: list[tuple[str, str]] = []  # ("class" | "def", name) around the node being visited
        self.nested: dict[str, str] = {}  # functions defined inside functions -> kind
        self.paren_columns: dict[cst.FunctionDef, tuple[int, int] | None] = {}  # converted def -> its columns
        self.ast_nodes: dict[cst.FunctionDef, ast.FunctionDef | ast.AsyncFunctionDef] = {}  # known pairs (sparse)
        self.trial_tests: set[cst.FunctionDef] = set()  # converted for asyncio, run by trial: @asyncio_test

    def on_visit(self, node: cst.CSTNode) -> bool:
        if not self.called_ic and type(node) in EXPRESSIONS:
            return False  # nothing to find in expressions: skip them (most of the tree)
        return super().on_visit(node)

    def visit_Module(self, node: cst.Module) -> None:
        self.called_ic = bool(_CALLED_IC.search(self.source))
        if not self.called_ic:
            return  # the text says inlineCallbacks is never called: skip the search of the tree
        for call in m.findall(node, m.Call(func=INLINE_CALLBACKS)):
            if call.args and isinstance(call.args[0].value, cst.Name):
                self.wrapped_names.add(call.args[0].value.value)

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            bound = alias.asname.name if alias.asname is not None else alias.name
            self.imported.add(cst.Module(body=[]).code_for_node(bound).split(".")[0])

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if not isinstance(node.names, cst.ImportStar):
            for alias in node.names:
                bound = alias.asname.name if alias.asname is not None else alias.name
                if isinstance(bound, cst.Name):
                    self.imported.add(bound.value)
        if node.relative or node.module is None or isinstance(node.names, cst.ImportStar):
            return
        if not cst.Module(body=[]).code_for_node(node.module).startswith("twisted"):
            return
        for alias in node.names:
            bound = alias.asname.name if alias.asname is not None else alias.name
            if isinstance(bound, cst.Name):
                self.twisted_names.add(bound.value)

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        if not self.scopes:
            bases = [cst.Module(body=[]).code_for_node(a.value) for a in node.bases if a.keyword is None]
            self.index.classes.setdefault(node.name.value, ClassInfo(bases=bases))
        self.scopes.append(("class", node.name.value))

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self.scopes.pop()

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.scopes.pop()

    def _record(self, node: cst.FunctionDef, kind: str) -> None:
        if not self.scopes:
            self.index.functions[node.name.value] = kind
        elif len(self.scopes) == 1 and self.scopes[0][0] == "class":
            self.index.classes[self.scopes[0][1]].methods[node.name.value] = kind
        elif self.scopes[-1][0] == "def":  # a nested function, known by name in this file only
            seen = self.nested.setdefault(node.name.value, kind)
            if seen != kind:
                self.nested[node.name.value] = "plain"

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.order[node] = self.count
        self.count += 1
        try:
            self._classify(node)
        finally:
            self.scopes.append(("def", node.name.value))

    def _classify(self, node: cst.FunctionDef) -> None:
        name = node.name.value
        ic = has_inline_callbacks(node)
        if node.asynchronous is not None and not ic:
            self.async_names.add(name)
            if _has_deferred_api(node):
                if self.target == "asyncio":
                    self.convert.add(node)  # step two: drop the Deferred API
                    self.fn_class[node] = next((n for kind, n in reversed(self.scopes) if kind == "class"), None)
                    self._review_decorators(node)
                self._record(node, "new" if self.target == "asyncio" else "deferred")
            else:
                self._record(node, "coroutine")
            return
        if not ic:
            self._record(node, "plain")
            return
        self._record(node, "deferred")
        if node.asynchronous is not None:
            self.reports.append(Report(self.line(node), f"{name}(): inlineCallbacks on an async def; left unchanged"))
        elif name in self.wrapped_names:
            self.reports.append(Report(self.line(node), f"{name}(): also passed to inlineCallbacks(); left unchanged"))
        else:
            self.plan_generator(node)

    def plan_generator(self, node: cst.FunctionDef) -> None:
        """An ``@inlineCallbacks`` generator: converted, unless its body holds what cannot be."""
        analyzer = _Analyzer(self.line, node.name.value)
        walk(node.body, analyzer)
        if analyzer.problems:
            self.reports.extend(analyzer.problems)
            return
        self.analyzed[node] = analyzer
        self.convert.add(node)
        self.async_names.add(node.name.value)
        self._record(node, "new" if self.target == "asyncio" else "deferred")
        self.paren_columns[node] = self._paren_column(node)
        self.fn_class[node] = next((n for kind, n in reversed(self.scopes) if kind == "class"), None)
        self._review_decorators(node)

    def ast_of(self, node: cst.FunctionDef) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        if node in self.ast_nodes:
            return self.ast_nodes[node]
        return self.tree.function(self.order[node], node.name.value)

    def _paren_column(self, node: cst.FunctionDef) -> tuple[int, int] | None:
        """The columns of the ``def`` and of its ``(``."""
        fn = self.ast_of(node)
        if fn is not None:
            paren = self.tree.paren_column(fn)
            return None if paren is None else (fn.col_offset, paren)
        start = self.line.position(node.name).start
        paren = start.column + len(node.name.value) + len(node.whitespace_after_name.value)
        return self.line.position(node).start.column, paren

    def _trial_method(self, node: cst.FunctionDef) -> bool:
        """A test method or fixture of a trial ``TestCase`` (its bases in this file): trial calls it and waits
        on the Deferred it returns, driving a coroutine with Twisted's driver, which cannot await asyncio."""
        name = node.name.value
        if not (name.startswith("test") or name in _TRIAL_FIXTURES) or not self.scopes or self.scopes[-1][0] != "class":
            return False
        seen: set[str] = set()
        todo = [self.scopes[-1][1]]
        while todo:
            cls = todo.pop()
            info = self.index.classes.get(cls)
            if cls in seen or info is None:
                continue
            seen.add(cls)
            bases = [base.rsplit(".", 1)[-1] for base in info.bases]
            if any(base.endswith("TestCase") for base in bases):
                return True
            todo += bases
        return False

    def _review_decorators(self, node: cst.FunctionDef) -> None:
        fn = self.ast_of(node)
        target, later = self.target, False
        if target == "asyncio" and self._trial_method(node):
            self.trial_tests.add(node)
            target, later = "twisted", True  # behind @asyncio_test its call still returns a Deferred at once
        for dec, why in needs_review(list(node.decorators), target, starts_later=later):
            at = node.decorators.index(dec)
            line = fn.decorator_list[at].lineno if fn is not None and at < len(fn.decorator_list) else self.line(dec)
            self.reports.append(Report(line, f"{node.name.value}(): @{decorator_name(dec)} {why}"))

    def visit_Call(self, node: cst.Call) -> None:
        if m.matches(node.func, INLINE_CALLBACKS):
            self.reports.append(Report(self.line(node), "inlineCallbacks applied other than as a decorator; left unchanged"))


class _Contexts:
    """Builds the :class:`Known` for one converted function: the module's names, its class, its locals."""

    def __init__(self, planner: _Planner, index: ProjectIndex) -> None:
        self.planner, self.index = planner, index
        functions = {**planner.nested, **planner.index.functions}
        self.base = Known(index, functions, planner.index.classes, frozenset(planner.twisted_names),
                          imported=frozenset(planner.imported))
        self._known: dict[cst.FunctionDef, Known] = {}

    def known(self, fn: cst.FunctionDef) -> Known:
        if fn not in self._known:
            scoped = Known(self.index, self.base.functions, self.base.classes, self.base.twisted_names,
                           class_name=self.planner.fn_class.get(fn), imported=self.base.imported)
            analyzed = self.planner.analyzed.get(fn)
            scoped.locals = local_awaitables(fn, scoped, analyzed.values) if analyzed is not None else frozenset()
            self._known[fn] = scoped
        return self._known[fn]


def _helper_lines(fn: cst.FunctionDef, planner: _Planner, unknown: Callable[[cst.BaseExpression], bool]
                  ) -> list[tuple[int, str]]:
    """Line and text of each ``yield`` in ``fn``'s own body whose value is ``unknown``."""
    analyzed = planner.analyzed.get(fn)
    if analyzed is None:
        return []
    yields = analyzed.yields
    tree_fn = planner.ast_of(fn)
    ast_lines = planner.tree.yield_lines(tree_fn) if tree_fn is not None else []
    if len(ast_lines) != len(yields):  # the trees disagree: ask libcst
        ast_lines = [planner.line(y) for y in yields]
    return [(line, cst.Module(body=[]).code_for_node(y.value)) for line, y in zip(ast_lines, yields, strict=True)
            if isinstance(y.value, cst.BaseExpression) and unknown(y.value)]


class _Rewriter(cst.CSTTransformer):
    """Second pass: rewrite the functions the planner chose."""

    def __init__(self, convert: set[cst.FunctionDef], finish_body: FinishBody | None, target: Target,
                 contexts: _Contexts | None = None, helper: bool = True) -> None:
        super().__init__()
        self.convert, self.finish_body, self.target = convert, finish_body, target
        self.contexts, self.helper = contexts, helper
        self.removed: Counter[str] = Counter()  # name -> occurrences the rewrite took out (twisted target)

    def on_visit(self, node: cst.CSTNode) -> bool:
        # a function is a statement: no need to look inside expressions or simple statements, nor inside a
        # function that holds none to convert (its body then reaches leave_FunctionDef as the original)
        kind = type(node)
        if kind in EXPRESSIONS or kind is cst.SimpleStatementLine:
            return False
        if kind is cst.FunctionDef and not any(f in self.convert for f in function_defs(node.body, [])):  # type: ignore[attr-defined]
            return False
        return super().on_visit(node)

    def leave_FunctionDef(self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef) -> cst.FunctionDef:
        if original_node not in self.convert:
            return updated_node
        known = None
        if self.target == "twisted":
            decorators = [
                d.with_changes(decorator=cst.Name("deferred_api")) if _is_decorator(d, INLINE_CALLBACKS_NAMES) else d
                for d in updated_node.decorators
            ]
            for d in updated_node.decorators:
                if _is_decorator(d, INLINE_CALLBACKS_NAMES):
                    self.removed.update(dotted_names(d.decorator))
            if self.contexts is not None:
                known = self.contexts.known(original_node)
        else:  # asyncio callers await the coroutine itself; trial gets a Deferred of it run as a Task
            trial = self.contexts is not None and original_node in self.contexts.planner.trial_tests
            decorators = []
            for d in updated_node.decorators:
                if not (_is_decorator(d, INLINE_CALLBACKS_NAMES) or _is_decorator(d, DEFERRED_API_NAMES)):
                    decorators.append(d)
                elif trial:
                    decorators.append(d.with_changes(decorator=cst.Name("asyncio_test")))
                    trial = False
                    decorators = _below_patchers(decorators)
        analyzed = self.contexts.planner.analyzed.get(original_node) if self.contexts is not None else None
        body_rewriter = _BodyRewriter(known, self.helper, analyzed.hot if analyzed is not None else None,
                                      strict=updated_node.body is original_node.body)
        body = updated_node.body.visit(body_rewriter)
        self.removed.update(body_rewriter.removed)
        if self.finish_body is not None:
            body = self.finish_body(body, original_node)
        new = updated_node.with_changes(decorators=decorators, asynchronous=cst.Asynchronous(), body=body)
        if original_node.asynchronous is None and self.contexts is not None:
            new = realign_parameters(new, self.contexts.planner.paren_columns.get(original_node))
        return new


def _below_patchers(decorators: list[cst.Decorator]) -> list[cst.Decorator]:
    """The last decorator (``@asyncio_test``) moved above the patchers right above it.

    ``mock.patch`` on an ``async def`` keeps its patch for the whole awaited call; on ``@asyncio_test``'s
    plain wrapper it would be undone before the body, which starts on a later loop turn, runs
    (``inlineCallbacks`` ran it at once, inside the patch).
    """
    marker = len(decorators) - 1
    count = patchers_above(decorators, marker)
    if not count:
        return decorators
    top = marker - count
    moved = decorators[marker].with_changes(leading_lines=decorators[top].leading_lines)
    patchers = [decorators[top].with_changes(leading_lines=decorators[marker].leading_lines),
                *decorators[top + 1:marker]]
    return [*decorators[:top], moved, *patchers]


@dataclass
class Prepared:
    """One parsed and planned module: its part of the index now, its rewrite once the index is complete."""

    source: str
    target: Target
    wrapper: MetadataWrapper | None  # None: only its generators were parsed (``units``)
    planner: _Planner
    units: list[Unit] | None = None

    @property
    def index(self) -> FileIndex:
        return self.planner.index

    def async_functions(self) -> set[str]:
        tree = self.planner.tree.tree
        return {stmt.name for stmt in tree.body
                if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and stmt.name in self.planner.async_names}

    def rewrite(self, index: ProjectIndex | None = None, unknown_yields: UnknownYields = "helper",
                also_async: Iterable[str] = (), first_party: frozenset[str] = frozenset()) -> RewriteResult:
        """The rewritten module; ``index`` covers the whole run (this file alone if None); ``first_party``
        names the project's own packages, for the import groups (``bridge`` among them: first-party)."""
        planner, target = self.planner, self.target
        if index is None:
            index = ProjectIndex.of([planner.index])
        for name in also_async:  # the older interface: module-level functions converted elsewhere
            index.functions.setdefault(name, set()).add("new" if target == "asyncio" else "deferred")
        reports = list(planner.reports)
        helpers: list[Report] = []
        finish_body: FinishBody | None = None
        contexts = _Contexts(planner, index)
        if target == "asyncio":

            extra = AsyncioPlanner(planner.convert, index, planner.index.classes)
            assert self.wrapper is not None
            self.wrapper.visit(extra)
            reports += extra.reports

            helper = unknown_yields == "helper"

            def finish_body(body: cst.BaseSuite, fn: cst.FunctionDef) -> cst.BaseSuite:
                from_generator = has_inline_callbacks(fn)
                return asyncio_body(body, planner.async_names, wrap_unknown=from_generator, index=index,
                                    local_classes=planner.index.classes,
                                    known=contexts.known(fn) if from_generator else None, helper=helper)

            for fn in planner.convert:
                if not has_inline_callbacks(fn):
                    continue
                unknown = awaits(planner.async_names, True, index, contexts.known(fn)).unknown
                for line, what in _helper_lines(fn, planner, unknown):
                    what = _one_line(what)
                    if helper:
                        helpers.append(Report(line, f"await maybe_awaitable({what}): not known to give a Deferred "
                                                    "or a coroutine (as_future() raises TypeError on a plain value "
                                                    "or None)"))
                    else:
                        reports.append(Report(line, f"as_future({what}): not known to give a Deferred (TypeError if "
                                                    "it is a plain value or None)"))
            helpers.sort(key=lambda r: r.line)
        elif not planner.convert:
            return RewriteResult(code=self.source, changed=False, reports=sorted(reports, key=lambda r: r.line))
        else:
            found = [one for fn in planner.convert
                     for one in _helper_lines(fn, planner, lambda v, k=contexts.known(fn): not k.awaitable(v))]
            for line, what in sorted(found):
                what = _one_line(what)
                if unknown_yields == "helper":
                    helpers.append(Report(line, f"await maybe_awaitable({what}): not known to be awaitable"))
                else:
                    reports.append(Report(line, f"yield {what}: not known to be awaitable, now a plain await "
                                                "(TypeError if it is None or a plain value)"))

        rewriter = _Rewriter(planner.convert, finish_body, target, contexts, helper=unknown_yields == "helper")
        if self.units is not None:
            new_module = None
            spliced = splice(self.source, self.units, [unit.module.visit(rewriter) for unit in self.units])
        else:
            assert self.wrapper is not None
            new_module = self.wrapper.module.visit(rewriter)
            if target == "asyncio" and extra.wraps:

                new_module = new_module.visit(WrapCallbacks(extra.newly_async, index))
        before = names_of(planner.tree.tree, planner.tree.nodes) if planner.tree.parsed else None
        if target == "twisted" and before is not None:
            # The names the new code uses follow from what the rewrite removed and added: no codegen to find out.
            counts = before.counts.copy()
            counts.subtract(rewriter.removed)
            used = {name for name, count in counts.items() if count > 0} | {"deferred_api"}
            if unknown_yields == "helper" and helpers:
                used.add("maybe_awaitable")
            if new_module is None:
                code = splice_imports(spliced, planner.tree.tree, self.units or [], before, used, first_party)
            else:
                code = fix_imports(new_module, before, used, first_party).code
        else:
            if new_module is None:
                new_module = cst.parse_module(spliced)
            code = new_module.code
            if code != self.source:
                code = fix_imports(new_module, before or names_of(self.source), names_of(code), first_party).code
        reports.sort(key=lambda r: r.line)
        return RewriteResult(code=code, changed=code != self.source, reports=reports, helpers=helpers,
                             converted=len(planner.convert))


def prepare(source: str, target: Target = "twisted", tree: ast.Module | None = None, sparse: bool = True) -> Prepared:
    """Parse and plan one module (the only libcst parse it gets); ``tree`` is its ``ast``, if already parsed.

    For the twisted target libcst parses only the generators that change (see :mod:`bridge.rewrite.sparse`),
    unless ``sparse`` is False: the whole module then, for the same result.
    """
    if target not in ("twisted", "asyncio"):
        raise ValueError(f"unknown target {target!r}: use 'twisted' or 'asyncio'")
    parsed = True
    if tree is None:
        try:
            tree = ast.parse(source)
        except SyntaxError:  # libcst's grammar accepted it, Python's does not: take lines from libcst
            tree, parsed = ast.Module(body=[], type_ignores=[]), False
    if target == "twisted" and parsed and sparse:
        sparse = _prepare_sparse(source, AstLines(tree, source))
        if sparse is not None:
            return sparse
    wrapper = MetadataWrapper(cst.parse_module(source), unsafe_skip_copy=True)  # the tree is ours alone
    planner = _Planner(target, _Lines(wrapper), source, AstLines(tree, source, parsed))
    planner.index.patched = patched_names(tree, planner.tree.nodes)
    wrapper.module.visit(planner)
    return Prepared(source, target, wrapper, planner)


def _prepare_sparse(source: str, tree: AstLines) -> Prepared | None:
    """The twisted target's plan from ``ast``, with libcst on the generators only (None: plan the whole module)."""
    planner = _Planner("twisted", None, source, tree)  # type: ignore[arg-type]  # its lines: the units'
    try:
        found = sparse_plan(planner, source, tree)
    except (Mismatch, cst.ParserSyntaxError):
        return None
    return Prepared(source, "twisted", None, planner, found.units)


def quick_index(source: str, target: Target) -> tuple[FileIndex, ast.Module] | None:
    """For the twisted target, the index of a file with nothing to convert, without libcst (None: parse it)."""
    if target != "twisted" or "inlineCallbacks" in source or "deferred_api" in source:
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None  # libcst reports it, or parses what Python's own parser does not
    functions, classes = twisted_kinds(tree)
    index = FileIndex(functions, {name: ClassInfo(bases, methods) for name, (bases, methods) in classes.items()},
                      patched_names(tree))
    return index, tree


def dotted_names(expr: cst.BaseExpression) -> list[str]:
    """The names in ``a.b.c`` (what ``ast`` counts as a Name and two attributes)."""
    found: list[str] = []
    while isinstance(expr, cst.Attribute):
        found.append(expr.attr.value)
        expr = expr.value
    if isinstance(expr, cst.Name):
        found.append(expr.value)
    return found


def _one_line(code: str, limit: int = 80) -> str:
    flat = " ".join(code.split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def async_functions(source: str, target: Target = "asyncio") -> set[str]:
    """Names of the module-level functions that are ``async def`` in this module once rewritten."""
    return prepare(source, target).async_functions()


def rewrite_source(source: str, target: Target = "twisted", *, also_async: Iterable[str] = (),
                   index: ProjectIndex | None = None, unknown_yields: UnknownYields = "helper",
                   first_party: frozenset[str] = frozenset()) -> RewriteResult:
    """Rewrite ``@inlineCallbacks`` functions in one module's source; see the module docstring.

    ``index`` describes the other files of the run (this one is added to it);
    ``also_async`` names module-level functions defined elsewhere that are coroutine
    functions (the older, names-only form of the index).
    """
    prepared = prepare(source, target)
    if index is not None:
        merged = ProjectIndex.of([prepared.index])
        for name, kinds in index.functions.items():
            merged.functions.setdefault(name, set()).update(kinds)
        for name, kinds in index.methods.items():
            merged.methods.setdefault(name, set()).update(kinds)
        for name, infos in index.classes.items():
            merged.classes.setdefault(name, []).extend(infos)
        index = merged
    return prepared.rewrite(index, unknown_yields, also_async, first_party)
