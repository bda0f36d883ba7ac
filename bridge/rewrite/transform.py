"""``@inlineCallbacks`` generators to ``async def`` functions, on libcst.

:func:`rewrite_source` turns each function decorated with ``@inlineCallbacks``
(``@defer.inlineCallbacks``, ``@twisted.internet.defer.inlineCallbacks``) into
an ``async def`` decorated with :func:`bridge.deferred_api` in the same place,
so Twisted callers still get a Deferred and the body runs as an asyncio Task
(where awaiting asyncio futures works too). Inside it, ``yield X`` becomes
``await X`` and ``returnValue(x)`` / ``defer.returnValue(x)`` becomes
``return x``. ``from bridge import deferred_api`` is added when missing.

What cannot be converted safely is left exactly as it is and reported with a
line number: bare ``yield``, ``yield from``, ``yield`` or ``returnValue`` inside
a nested function/lambda/class/comprehension, ``returnValue`` used other than as
a statement with one positional argument, and ``inlineCallbacks(...)`` called
rather than used as a decorator. The rewrite is idempotent.

Not detected (semantic differences to review by hand): ``yield`` of a value
that is not a Deferred (``await`` raises ``TypeError`` where inlineCallbacks
passed the value through), and the body no longer starting synchronously: it
starts when the asyncio loop next runs, and needs an asyncio loop (the asyncio
reactor, :func:`bridge.install_reactor`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst
import libcst.matchers as m
from libcst.metadata import MetadataWrapper, PositionProvider

__all__ = ["Report", "RewriteResult", "rewrite_source"]


@dataclass(frozen=True)
class Report:
    """Something left unchanged: the 1-based line and why."""

    line: int
    reason: str


@dataclass
class RewriteResult:
    code: str
    changed: bool
    reports: list[Report] = field(default_factory=list)


def _defer_name(name: str) -> m.BaseMatcherNode:
    """``name``, ``defer.name`` or ``twisted.internet.defer.name``."""
    return (
        m.Name(name)
        | m.Attribute(value=m.Name("defer"), attr=m.Name(name))
        | m.Attribute(
            value=m.Attribute(
                value=m.Attribute(value=m.Name("twisted"), attr=m.Name("internet")), attr=m.Name("defer")
            ),
            attr=m.Name(name),
        )
    )


_INLINE_CALLBACKS = _defer_name("inlineCallbacks")
_RETURN_VALUE = _defer_name("returnValue")
_NESTED_SCOPES = (cst.FunctionDef, cst.Lambda, cst.ClassDef, cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)


def _is_inline_callbacks_decorator(dec: cst.Decorator) -> bool:
    return m.matches(dec.decorator, _INLINE_CALLBACKS)


def _has_inline_callbacks(fn: cst.FunctionDef) -> bool:
    return any(_is_inline_callbacks_decorator(d) for d in fn.decorators)


def _is_return_value_call(node: cst.CSTNode) -> bool:
    return isinstance(node, cst.Call) and m.matches(node.func, _RETURN_VALUE)


def _simple_return_value(call: cst.Call) -> bool:
    return len(call.args) == 1 and call.args[0].keyword is None and call.args[0].star == ""


class _Analyzer(cst.CSTVisitor):
    """Finds what stops one decorated function's conversion (on the original tree)."""

    def __init__(self, line_of, fn_name: str) -> None:
        self.line_of, self.fn_name = line_of, fn_name
        self.depth = 0
        self.problems: list[Report] = []
        self.statement_calls: set[int] = set()  # ids of returnValue calls that are a whole statement

    def _problem(self, node: cst.CSTNode, what: str) -> None:
        self.problems.append(Report(self.line_of(node), f"{self.fn_name}(): {what}; left unchanged"))

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.FunctionDef) and _has_inline_callbacks(node):
            return False  # a nested inlineCallbacks function is converted (or reported) on its own
        if isinstance(node, _NESTED_SCOPES):
            self.depth += 1
        return super().on_visit(node)

    def on_leave(self, original_node: cst.CSTNode) -> None:
        # on_leave runs even for a node whose on_visit returned False
        if isinstance(original_node, _NESTED_SCOPES) and not (
            isinstance(original_node, cst.FunctionDef) and _has_inline_callbacks(original_node)
        ):
            self.depth -= 1
        super().on_leave(original_node)

    def visit_Expr(self, node: cst.Expr) -> None:
        if _is_return_value_call(node.value):
            self.statement_calls.add(id(node.value))

    def visit_Yield(self, node: cst.Yield) -> None:
        if self.depth:
            self._problem(node, "yield inside a nested function, lambda, class or comprehension")
        elif node.value is None:
            self._problem(node, "bare yield (no value)")
        elif isinstance(node.value, cst.From):
            self._problem(node, "yield from in an inlineCallbacks generator")

    def visit_Call(self, node: cst.Call) -> None:
        if not _is_return_value_call(node):
            return
        if self.depth:
            self._problem(node, "returnValue() inside a nested function, lambda, class or comprehension")
        elif id(node) not in self.statement_calls:
            self._problem(node, "returnValue() used inside an expression")
        elif not _simple_return_value(node):
            self._problem(node, "returnValue() without exactly one positional argument")


class _BodyRewriter(cst.CSTTransformer):
    """``yield X`` -> ``await X`` and ``returnValue(x)`` -> ``return x``, outside nested scopes."""

    def __init__(self) -> None:
        self.depth = 0

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, _NESTED_SCOPES):
            self.depth += 1
        return super().on_visit(node)

    def on_leave(self, original_node, updated_node):
        if isinstance(original_node, _NESTED_SCOPES):
            self.depth -= 1
        return super().on_leave(original_node, updated_node)

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
        if self.depth or not _is_return_value_call(call) or not _simple_return_value(call):
            return updated_node
        return cst.Return(value=call.args[0].value, semicolon=updated_node.semicolon)


class _Rewriter(cst.CSTTransformer):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self) -> None:
        super().__init__()
        self.reports: list[Report] = []
        self.convert: set[cst.FunctionDef] = set()
        self.converted = 0
        self.wrapped_names: set[str] = set()  # f in ``inlineCallbacks(f)``: keep f a generator

    def visit_Module(self, node: cst.Module) -> None:
        for call in m.findall(node, m.Call(func=_INLINE_CALLBACKS)):
            if call.args and isinstance(call.args[0].value, cst.Name):
                self.wrapped_names.add(call.args[0].value.value)

    def _line(self, node: cst.CSTNode) -> int:
        return self.get_metadata(PositionProvider, node).start.line

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        if not _has_inline_callbacks(node):
            return
        if node.asynchronous is not None:
            self.reports.append(
                Report(self._line(node), f"{node.name.value}(): inlineCallbacks on an async def; left unchanged")
            )
            return
        if node.name.value in self.wrapped_names:
            self.reports.append(
                Report(self._line(node), f"{node.name.value}(): also passed to inlineCallbacks(); left unchanged")
            )
            return
        analyzer = _Analyzer(self._line, node.name.value)
        node.body.visit(analyzer)
        if analyzer.problems:
            self.reports.extend(analyzer.problems)
        else:
            self.convert.add(node)

    def visit_Call(self, node: cst.Call) -> None:
        if m.matches(node.func, _INLINE_CALLBACKS):
            self.reports.append(
                Report(self._line(node), "inlineCallbacks applied other than as a decorator; left unchanged")
            )

    def leave_FunctionDef(self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef) -> cst.FunctionDef:
        if original_node not in self.convert:
            return updated_node
        self.converted += 1
        decorators = [
            d.with_changes(decorator=cst.Name("deferred_api")) if _is_inline_callbacks_decorator(d) else d
            for d in updated_node.decorators
        ]
        return updated_node.with_changes(
            decorators=decorators,
            asynchronous=cst.Asynchronous(),
            body=updated_node.body.visit(_BodyRewriter()),
        )


# libcst's codemod import helpers (AddImportsVisitor, RemoveImportsVisitor) crash once Twisted is
# imported (zope.interface's ``__provides__``, Instagram/LibCST#1458), so imports are handled here.


def _is_import_line(stmt: cst.CSTNode) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and all(
        isinstance(s, cst.Import | cst.ImportFrom) for s in stmt.body
    )


def _add_deferred_api_import(module: cst.Module) -> cst.Module:
    """``from bridge import deferred_api`` after the module's leading imports, unless already imported."""
    wanted = m.ImportFrom(
        module=m.Name("bridge"),
        names=[m.ZeroOrMore(), m.ImportAlias(name=m.Name("deferred_api"), asname=None), m.ZeroOrMore()],
    )
    if m.findall(module, wanted | m.ImportFrom(module=m.Name("bridge"), names=m.ImportStar())):
        return module
    body = list(module.body)
    at = 0
    for i, stmt in enumerate(body):
        if _is_import_line(stmt) or (
            i == 0 and m.matches(stmt, m.SimpleStatementLine(body=[m.Expr(m.SimpleString() | m.ConcatenatedString())]))
        ):
            at = i + 1
        else:
            break
    line = cst.parse_statement("from bridge import deferred_api\n")
    if at and not _is_import_line(body[at - 1]):  # straight after the docstring: keep a blank line
        line = line.with_changes(leading_lines=[cst.EmptyLine()])
    body.insert(at, line)
    return module.with_changes(body=body)


def _drop_unused_defer_imports(module: cst.Module) -> cst.Module:
    """Drop ``inlineCallbacks`` / ``returnValue`` from ``from twisted.internet.defer import ...`` once unused."""
    defer_import = m.ImportFrom(
        module=m.Attribute(value=m.Attribute(value=m.Name("twisted"), attr=m.Name("internet")), attr=m.Name("defer"))
    )
    imported = {id(n) for imp in m.findall(module, defer_import) for n in m.findall(imp, m.Name())}
    used = {n.value for n in m.findall(module, m.Name()) if id(n) not in imported}
    unused = {"inlineCallbacks", "returnValue"} - used

    class Dropper(cst.CSTTransformer):
        def leave_ImportFrom(self, original_node, updated_node):
            if not m.matches(updated_node, defer_import) or isinstance(updated_node.names, cst.ImportStar):
                return updated_node
            keep = [a for a in updated_node.names if not (a.asname is None and a.evaluated_name in unused)]
            if len(keep) == len(updated_node.names):
                return updated_node
            if not keep:
                return cst.RemoveFromParent()
            keep[-1] = keep[-1].with_changes(comma=updated_node.names[-1].comma)
            return updated_node.with_changes(names=keep)

    return module.visit(Dropper()) if unused else module


def rewrite_source(source: str) -> RewriteResult:
    """Rewrite ``@inlineCallbacks`` functions in one module's source; see the module docstring."""
    module = cst.parse_module(source)
    rewriter = _Rewriter()
    new_module = MetadataWrapper(module).visit(rewriter)
    if rewriter.converted:
        new_module = _add_deferred_api_import(_drop_unused_defer_imports(new_module))
    reports = sorted(rewriter.reports, key=lambda r: r.line)
    return RewriteResult(code=new_module.code, changed=new_module.code != source, reports=reports)
