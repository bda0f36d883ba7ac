"""``@inlineCallbacks`` generators to ``async def`` functions, on libcst.

:func:`rewrite_source` has two targets, the two steps of a migration.

``target="twisted"`` (the code still runs on Twisted): each function decorated
with ``@inlineCallbacks`` (``@defer.inlineCallbacks``,
``@twisted.internet.defer.inlineCallbacks``) becomes an ``async def`` decorated
with :func:`bridge.deferred_api` in the same place, so Twisted callers still get
a Deferred and the body runs as an asyncio Task (where awaiting asyncio futures
works too). Inside it, ``yield X`` becomes ``await X`` and ``returnValue(x)`` /
``defer.returnValue(x)`` becomes ``return x``.

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

Not detected (semantic differences to review by hand): ``yield`` of a value
that is not a Deferred (``await`` raises ``TypeError`` where inlineCallbacks
passed the value through), and the body no longer starting synchronously: it
starts when the asyncio loop next runs, and needs an asyncio loop (the asyncio
reactor, :func:`bridge.install_reactor`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import libcst as cst
import libcst.matchers as m
from libcst.metadata import MetadataWrapper, PositionProvider

from .imports import fix_imports
from .names import DEFERRED_API, INLINE_CALLBACKS, RETURN_VALUE, call_named

__all__ = ["Report", "RewriteResult", "Target", "async_functions", "rewrite_source"]

Target = Literal["twisted", "asyncio"]
LineOf = Callable[[cst.CSTNode], int]
FinishBody = Callable[[cst.BaseSuite, bool], cst.BaseSuite]  # (body, was an inlineCallbacks generator)


@dataclass(frozen=True)
class Report:
    """Something left unchanged (or for a person to finish): the 1-based line and why."""

    line: int
    reason: str


@dataclass
class RewriteResult:
    code: str
    changed: bool
    reports: list[Report] = field(default_factory=list)


NESTED_SCOPES = (cst.FunctionDef, cst.Lambda, cst.ClassDef, cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)


def _is_decorator(dec: cst.Decorator, matcher: m.BaseMatcherNode) -> bool:
    return m.matches(dec.decorator, matcher)


def has_inline_callbacks(fn: cst.FunctionDef) -> bool:
    return any(_is_decorator(d, INLINE_CALLBACKS) for d in fn.decorators)


def _has_deferred_api(fn: cst.FunctionDef) -> bool:
    return fn.asynchronous is not None and any(_is_decorator(d, DEFERRED_API) for d in fn.decorators)


def _simple_return_value(call: cst.Call) -> bool:
    return len(call.args) == 1 and call.args[0].keyword is None and call.args[0].star == ""


class _Analyzer(cst.CSTVisitor):
    """Finds what stops one decorated function's conversion (on the original tree)."""

    def __init__(self, line_of: LineOf, fn_name: str) -> None:
        super().__init__()
        self.line_of, self.fn_name = line_of, fn_name
        self.depth = 0
        self.problems: list[Report] = []
        self.statement_calls: set[int] = set()  # ids of returnValue calls that are a whole statement

    def _problem(self, node: cst.CSTNode, what: str) -> None:
        self.problems.append(Report(self.line_of(node), f"{self.fn_name}(): {what}; left unchanged"))

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.FunctionDef) and has_inline_callbacks(node):
            return False  # a nested inlineCallbacks function is converted (or reported) on its own
        if isinstance(node, NESTED_SCOPES):
            self.depth += 1
        return super().on_visit(node)

    def on_leave(self, original_node: cst.CSTNode) -> None:
        # on_leave runs even for a node whose on_visit returned False
        if isinstance(original_node, NESTED_SCOPES) and not (
            isinstance(original_node, cst.FunctionDef) and has_inline_callbacks(original_node)
        ):
            self.depth -= 1
        super().on_leave(original_node)

    def visit_Expr(self, node: cst.Expr) -> None:
        if call_named(node.value, RETURN_VALUE):
            self.statement_calls.add(id(node.value))

    def visit_Yield(self, node: cst.Yield) -> None:
        if self.depth:
            self._problem(node, "yield inside a nested function, lambda, class or comprehension")
        elif node.value is None:
            self._problem(node, "bare yield (no value)")
        elif isinstance(node.value, cst.From):
            self._problem(node, "yield from in an inlineCallbacks generator")

    def visit_Call(self, node: cst.Call) -> None:
        if not call_named(node, RETURN_VALUE):
            return
        if self.depth:
            self._problem(node, "returnValue() inside a nested function, lambda, class or comprehension")
        elif id(node) not in self.statement_calls:
            self._problem(node, "returnValue() used inside an expression")
        elif not _simple_return_value(node):
            self._problem(node, "returnValue() without exactly one positional argument")


class ScopedTransformer(cst.CSTTransformer):
    """A transformer that knows whether it is inside a nested scope of the function it rewrites."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, NESTED_SCOPES):
            self.depth += 1
        return super().on_visit(node)

    def on_leave(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        if isinstance(original_node, NESTED_SCOPES):
            self.depth -= 1
        return super().on_leave(original_node, updated_node)


class _BodyRewriter(ScopedTransformer):
    """``yield X`` -> ``await X`` and ``returnValue(x)`` -> ``return x``, outside nested scopes."""

    def leave_Yield(self, original_node: cst.Yield, updated_node: cst.Yield) -> cst.BaseExpression:
        if self.depth or not isinstance(updated_node.value, cst.BaseExpression):
            return updated_node
        ws = updated_node.whitespace_after_yield
        return cst.Await(
            expression=updated_node.value,
            lpar=updated_node.lpar,
            rpar=updated_node.rpar,
            whitespace_after_await=ws if isinstance(ws, cst.SimpleWhitespace) else cst.SimpleWhitespace(" "),
        )

    def leave_Expr(self, original_node: cst.Expr, updated_node: cst.Expr) -> cst.BaseSmallStatement:
        call = updated_node.value
        if self.depth or not call_named(call, RETURN_VALUE) or not _simple_return_value(call):  # type: ignore[arg-type]
            return updated_node
        return cst.Return(value=call.args[0].value, semicolon=updated_node.semicolon)  # type: ignore[attr-defined]


class _Planner(cst.CSTVisitor):
    """First pass over the original tree: which functions convert, what is reported, what becomes async."""

    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, target: Target) -> None:
        super().__init__()
        self.target = target
        self.reports: list[Report] = []
        self.convert: set[cst.FunctionDef] = set()
        self.async_names: set[str] = set()  # functions and methods that are async def after the rewrite
        self.wrapped_names: set[str] = set()  # f in ``inlineCallbacks(f)``: keep f a generator

    def line(self, node: cst.CSTNode) -> int:
        return self.get_metadata(PositionProvider, node).start.line

    def visit_Module(self, node: cst.Module) -> None:
        for call in m.findall(node, m.Call(func=INLINE_CALLBACKS)):
            if call.args and isinstance(call.args[0].value, cst.Name):
                self.wrapped_names.add(call.args[0].value.value)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        name = node.name.value
        if node.asynchronous is not None and not has_inline_callbacks(node):
            self.async_names.add(name)
            if self.target == "asyncio" and _has_deferred_api(node):
                self.convert.add(node)  # step two: drop the Deferred API
            return
        if not has_inline_callbacks(node):
            return
        if node.asynchronous is not None:
            self.reports.append(Report(self.line(node), f"{name}(): inlineCallbacks on an async def; left unchanged"))
        elif name in self.wrapped_names:
            self.reports.append(Report(self.line(node), f"{name}(): also passed to inlineCallbacks(); left unchanged"))
        else:
            analyzer = _Analyzer(self.line, name)
            node.body.visit(analyzer)
            if analyzer.problems:
                self.reports.extend(analyzer.problems)
            else:
                self.convert.add(node)
                self.async_names.add(name)

    def visit_Call(self, node: cst.Call) -> None:
        if m.matches(node.func, INLINE_CALLBACKS):
            self.reports.append(Report(self.line(node), "inlineCallbacks applied other than as a decorator; left unchanged"))


class _Rewriter(cst.CSTTransformer):
    """Second pass: rewrite the functions the planner chose."""

    def __init__(self, convert: set[cst.FunctionDef], finish_body: FinishBody | None, target: Target) -> None:
        super().__init__()
        self.convert, self.finish_body, self.target = convert, finish_body, target

    def leave_FunctionDef(self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef) -> cst.FunctionDef:
        if original_node not in self.convert:
            return updated_node
        if self.target == "twisted":
            decorators = [
                d.with_changes(decorator=cst.Name("deferred_api")) if _is_decorator(d, INLINE_CALLBACKS) else d
                for d in updated_node.decorators
            ]
        else:  # asyncio callers await the coroutine itself
            decorators = [
                d for d in updated_node.decorators
                if not (_is_decorator(d, INLINE_CALLBACKS) or _is_decorator(d, DEFERRED_API))
            ]
        body = updated_node.body.visit(_BodyRewriter())
        if self.finish_body is not None:
            body = self.finish_body(body, has_inline_callbacks(original_node))
        return updated_node.with_changes(decorators=decorators, asynchronous=cst.Asynchronous(), body=body)


def _plan(source: str, target: Target) -> tuple[MetadataWrapper, _Planner]:
    if target not in ("twisted", "asyncio"):
        raise ValueError(f"unknown target {target!r}: use 'twisted' or 'asyncio'")
    wrapper = MetadataWrapper(cst.parse_module(source))
    planner = _Planner(target)
    wrapper.visit(planner)
    return wrapper, planner


def async_functions(source: str, target: Target = "asyncio") -> set[str]:
    """Names of the module-level functions that are ``async def`` in this module once rewritten.

    ``cutover rewrite`` collects them over every file it is given and passes them to
    each :func:`rewrite_source`, so a call into another converted module is awaited as it
    is, not through ``as_future``.
    """
    wrapper, planner = _plan(source, target)
    return {stmt.name.value for stmt in wrapper.module.body
            if isinstance(stmt, cst.FunctionDef) and stmt.name.value in planner.async_names}


def rewrite_source(source: str, target: Target = "twisted", *, also_async: Iterable[str] = ()) -> RewriteResult:
    """Rewrite ``@inlineCallbacks`` functions in one module's source; see the module docstring.

    ``also_async`` names module-level functions defined elsewhere that are coroutine
    functions (for the asyncio target: converted in other modules of the same run);
    a call ``name(...)`` or ``module.name(...)`` of one is awaited directly.
    """
    wrapper, planner = _plan(source, target)
    reports = list(planner.reports)
    finish_body: FinishBody | None = None
    if target == "asyncio":
        from .to_asyncio import AsyncioPlanner, asyncio_body

        extra = AsyncioPlanner(planner.convert)
        wrapper.visit(extra)
        reports += extra.reports
        elsewhere = frozenset(also_async)

        def finish_body(body: cst.BaseSuite, from_generator: bool) -> cst.BaseSuite:
            return asyncio_body(body, planner.async_names, wrap_unknown=from_generator, elsewhere=elsewhere)

    new_module = wrapper.module.visit(_Rewriter(planner.convert, finish_body, target))
    if new_module.code != wrapper.module.code:
        new_module = fix_imports(wrapper.module, new_module)
    code = new_module.code
    reports.sort(key=lambda r: r.line)
    return RewriteResult(code=code, changed=code != source, reports=reports)
