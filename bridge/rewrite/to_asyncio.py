"""The ``asyncio`` target: bodies of converted functions stop using Twisted.

A converted function is a plain ``async def`` run as an asyncio coroutine, so
what it awaits must be awaitable by asyncio. Each ``await X`` (a former
``yield X``) is handled by what ``X`` is:

============================================  ==========================================
``threads.deferToThread(f, *a)``              ``get_pool().run_in_thread(f, *a)``
``pool.defer(f, *a)`` / ``defer_to_thread``   ``pool.run(f, *a)`` / ``run_in_thread``
``task.deferLater(reactor, s)``               ``asyncio.sleep(s)``
``defer.gatherResults([a, b])``               ``asyncio.gather(a', b')``, each element as here
a call of a function converted in the run     unchanged (it is a coroutine now)
``x.m()``, every ``m`` in the tree converted   unchanged (methods are known across files)
``x.m()``, some ``m`` converted, some not     ``maybe_awaitable(x.m())``, and reported
``asyncio.*``, ``as_future(...)``             unchanged
known to give a Deferred (a Twisted API,       ``as_future(X)``
a callback chain, a Deferred built here...)
anything else (its type is unknown)            ``maybe_awaitable(X)``, and listed
============================================  ==========================================

What "known to give a Deferred" means is the twisted target's rule
(:class:`~bridge.rewrite.awaitables.Known`). ``inlineCallbacks`` passed a
yielded plain value (an ``Agent``, None, a Mock) straight back, where
``as_future`` raises ``TypeError``: ``maybe_awaitable`` passes it through, and
awaits a Deferred through ``as_future`` from an asyncio Task. With
``--unknown-yields report`` such a line keeps ``as_future(X)`` and is reported.

and two statement patterns: ``reactor.callLater(s, f, *a)`` as a statement
becomes ``asyncio.get_running_loop().call_later(s, f, *a)``, and the sleep idiom
``d = Deferred(); reactor.callLater(s, d.callback, v); x = yield d`` becomes
``x = await asyncio.sleep(s, v)``.

A Twisted call that is not awaited directly (``ds = [deferToThread(...)]``) is
left as it is: it still returns a Deferred, the reactor still runs it, and the
later ``await`` of it goes through ``as_future``. Converting it would change
what the variable holds. Such calls, ``addCallbacks`` chains, ``deferLater``
with a callable and ``LoopingCall`` (a ``@task(every=...)`` in
:mod:`bridge.tasks`) are reported for a person to finish. Every conversion here
keeps the behaviour; one difference is documented: ``asyncio.gather`` raises
the first error itself, where ``gatherResults`` wrapped it in ``FirstError``.
"""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst
import libcst.matchers as m
from libcst.metadata import ParentNodeProvider, PositionProvider

from .awaitables import Known
from .base import NESTED_SCOPES, Report, ScopedTransformer
from .index import COROUTINE, ClassInfo, ProjectIndex
from .names import (
    ASYNCIO_CALL,
    DEFER_LATER,
    DEFER_TO_THREAD,
    DEFERRED,
    GATHER_RESULTS,
    LOOPING_CALL,
    REACTOR_CALL_LATER,
    call_named,
)

__all__ = ["AsyncioPlanner", "asyncio_body", "awaits"]

_CALLBACK_METHODS = ("addCallback", "addCallbacks", "addErrback", "addBoth")
_POOL_DEFERRED_METHODS = {"defer": "run", "defer_to_thread": "run_in_thread"}
_POOL_ASYNC_METHODS = frozenset(_POOL_DEFERRED_METHODS.values())


_RUNS_COROUTINES = frozenset({"as_deferred", "ensureDeferred", "fromCoroutine", "ensure_future", "create_task",
                               "gather", "wait_for", "shield", "run", "run_until_complete", "iscoroutinefunction",
                               "maybeDeferred", "deferred_api"})


_TAKES_CALLBACKS = frozenset({"addCallback", "addCallbacks", "addErrback", "addBoth", "callLater", "callWhenRunning",
                              "deferLater", "LoopingCall"})


def _last_name(func: cst.BaseExpression) -> str:
    """``f`` of ``f``, ``a.b.f``; else ""."""
    return func.value if isinstance(func, cst.Name) else func.attr.value if isinstance(func, cst.Attribute) else ""


def method_call(index: ProjectIndex, func: cst.Attribute) -> str:
    """How ``recv.attr(...)`` on a receiver other than self/cls is awaited: "coroutine" when every method of
    that name in the tree is a coroutine function, "ambiguous" when some are, else "deferred"."""
    kinds = index.method_kinds(func.attr.value)
    if kinds and kinds <= COROUTINE:
        return "coroutine"
    return "ambiguous" if kinds & COROUTINE else "deferred"


def _self_call(func: cst.Attribute) -> bool:
    return m.matches(func.value, m.Name("self") | m.Name("cls"))


def _code(node: cst.CSTNode) -> str:
    return cst.Module(body=[]).code_for_node(node)


def _pool_like(expr: cst.BaseExpression) -> bool:
    """``get_pool()``, ``pool``, ``self.pool``, ``shared_pool``...: the receiver of a SharedPool call."""
    if call_named(expr, m.Name("get_pool") | m.Attribute(attr=m.Name("get_pool"))):
        return True
    if isinstance(expr, cst.Name):
        return expr.value.lower().endswith("pool")
    if isinstance(expr, cst.Attribute):
        return expr.attr.value.lower().endswith("pool")
    return False


def _deferlater_sleep(call: cst.Call) -> bool:
    """``deferLater(reactor, s)``, the sleep form (no callable)."""
    return call_named(call, DEFER_LATER) and len(call.args) == 2 and all(a.keyword is None and not a.star
                                                                          for a in call.args)


def _call_later_convertible(call: cst.Call) -> bool:
    """``loop.call_later`` takes no keyword arguments for the callable, unlike ``reactor.callLater``."""
    return all(a.keyword is None and a.star != "**" for a in call.args)


def _sequence_elements(arg: cst.BaseExpression) -> bool:
    return isinstance(arg, cst.List | cst.Tuple | cst.ListComp | cst.GeneratorExp)


def newly_async(func: cst.BaseExpression, converted: set[str], index: ProjectIndex) -> bool:
    """See :meth:`AsyncioPlanner._newly_async`; ``converted``: names of the functions converted in this file."""
    if isinstance(func, cst.Name):
        return func.value in converted or "new" in index.function_kinds(func.value)
    if not isinstance(func, cst.Attribute):
        return False
    attr = func.attr.value
    if _self_call(func):
        return attr in converted or method_call(index, func) == "coroutine" and "new" in index.method_kinds(attr)
    kinds = index.method_kinds(attr)
    if kinds:
        return "new" in kinds
    return isinstance(func.value, cst.Name) and "new" in index.function_kinds(attr)


class WrapCallbacks(cst.CSTTransformer):
    """``d.addCallback(self.setup)`` -> ``d.addCallback(deferred_api(self.setup))`` where ``setup`` was converted:
    Twisted then gets a Deferred from the callback, and the body runs at once, as the generator's did."""

    def __init__(self, converted: set[str], index: ProjectIndex) -> None:
        super().__init__()
        self.converted, self.index = converted, index

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
        if _last_name(updated_node.func) not in _TAKES_CALLBACKS:
            return updated_node
        args = [a.with_changes(value=cst.Call(func=cst.Name("deferred_api"), args=[cst.Arg(a.value)]))
                if isinstance(a.value, cst.Name | cst.Attribute) and newly_async(a.value, self.converted, self.index)
                else a for a in updated_node.args]
        return updated_node.with_changes(args=args)


class AsyncioPlanner(cst.CSTVisitor):
    """Reports, with lines of the original, what the asyncio target leaves for a person."""

    METADATA_DEPENDENCIES = (PositionProvider, ParentNodeProvider)

    def __init__(self, convert: set[cst.FunctionDef], index: ProjectIndex | None = None,
                 local_classes: dict[str, ClassInfo] | None = None) -> None:
        super().__init__()
        self.convert = convert
        self.index = index or ProjectIndex()
        self.newly_async = {fn.name.value for fn in convert}
        self.reports: list[Report] = []
        self.scopes: list[bool] = []  # per enclosing scope: is it a converted function's own body?
        self.handled: set[int] = set()  # ids of calls the body rewrite converts
        self.intervals: dict[str, str] = {}  # LoopingCall variable -> the interval its .start() is given
        self.wraps = 0  # converted functions given to a Twisted callback registration: wrapped by the rewrite

    def _line(self, node: cst.CSTNode) -> int:
        return self.get_metadata(PositionProvider, node).start.line

    def _report(self, node: cst.CSTNode, reason: str) -> None:
        self.reports.append(Report(self._line(node), reason))

    def _in_converted(self) -> bool:
        return bool(self.scopes) and self.scopes[-1]

    def visit_Module(self, node: cst.Module) -> None:
        for call in m.findall(node, m.Call(func=m.Attribute(attr=m.Name("start")), args=[m.AtLeastN(n=1)])):
            assert isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute)
            self.intervals.setdefault(_code(call.func.value), _code(call.args[0].value))

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, NESTED_SCOPES):
            self.scopes.append(isinstance(node, cst.FunctionDef) and node in self.convert)
        return super().on_visit(node)

    def on_leave(self, original_node: cst.CSTNode) -> None:
        if isinstance(original_node, NESTED_SCOPES):
            self.scopes.pop()
        super().on_leave(original_node)

    def _awaited(self, node: cst.CSTNode) -> bool:
        parent = self.get_metadata(ParentNodeProvider, node)
        return self._in_converted() and isinstance(parent, cst.Yield | cst.Await)

    def visit_Call(self, node: cst.Call) -> None:
        if self._awaited(node):
            self.handled.add(id(node))
            if call_named(node, GATHER_RESULTS) and node.args and _sequence_elements(node.args[0].value):
                seq = node.args[0].value
                elements = [seq.elt] if isinstance(seq, cst.ListComp | cst.GeneratorExp) else [
                    e.value for e in seq.elements  # type: ignore[union-attr]
                ]
                self.handled.update(id(e) for e in elements)
        chained = (isinstance(node.func, cst.Attribute) and node.func.attr.value in _CALLBACK_METHODS
                   and isinstance(node.func.value, cst.Call) and self._calls_newly_async(node.func.value))
        if id(node) in self.handled:
            pass  # awaited, or an element of a gatherResults that becomes asyncio.gather
        elif not self._in_converted() and self._calls_newly_async(node) and not self._chained_on(node):
            self._report(node, f"{_code(node.func)}() is a coroutine function now, but this caller is not converted "
                               "and gets a coroutine where it had a Deferred: wrap it in as_deferred() or port it")
        elif self._in_converted() and self._calls_newly_async(node) and not self._chained_on(node) \
                and not self._handed_on(node):
            self._report(node, f"{_code(node.func)}() is a coroutine function now and this call is not awaited: "
                               "its body runs only once the coroutine is awaited (inlineCallbacks ran it at once), "
                               "and never if it is not; await it where it is called")
        if self._awaited(node) and isinstance(node.func, cst.Attribute) and not _self_call(node.func) \
                and method_call(self.index, node.func) == "ambiguous":
            self._report(node, f"{_code(node.func)}(): the receiver's type is unknown and .{node.func.attr.value}() "
                               "is a coroutine method in some classes of the tree, not in others: awaited through "
                               "maybe_awaitable(); use a plain await or as_future() once the type is known")
        if chained:
            callee = _code(node.func.value.func)  # type: ignore[attr-defined]
            self._report(node, f"{callee}() now returns a coroutine, not a Deferred: .{node.func.attr.value}() on "
                               "it fails (AttributeError); await it in converted code, or wrap the call in "
                               "as_deferred()")
        elif call_named(node, LOOPING_CALL):
            self._report_looping_call(node)
        elif isinstance(node.func, cst.Attribute) and node.func.attr.value in _CALLBACK_METHODS:
            self._report(node, f".{node.func.attr.value}() chain: rewrite as await inside try/except by hand; "
                               "left unchanged")
        elif call_named(node, DEFER_LATER) and not _deferlater_sleep(node):
            self._report(node, "deferLater() with a callable: await asyncio.sleep(s), then call it; left unchanged")
        elif call_named(node, DEFER_TO_THREAD | GATHER_RESULTS) and id(node) not in self.handled:
            what = "deferToThread()" if call_named(node, DEFER_TO_THREAD) else "gatherResults()"
            self._report(node, f"{what} not awaited directly in a converted function: still a Deferred "
                               "(awaited through as_future); left unchanged")
        elif call_named(node, REACTOR_CALL_LATER):
            if not self._in_converted():
                self._report(node, "reactor.callLater() outside a converted function; left unchanged")
            elif not (isinstance(self.get_metadata(ParentNodeProvider, node), cst.Expr)
                      and _call_later_convertible(node)):
                self._report(node, "reactor.callLater() with keyword arguments or its IDelayedCall kept: "
                                   "use loop.call_later (functools.partial for keywords) by hand; left unchanged")

    def _handed_on(self, node: cst.Call) -> bool:
        """Whether ``node`` is passed straight to what runs or wraps a coroutine (``as_deferred``, ``gather``...)."""
        parent = self.get_metadata(ParentNodeProvider, node)
        if not isinstance(parent, cst.Arg):
            return False
        call = self.get_metadata(ParentNodeProvider, parent)
        return isinstance(call, cst.Call) and _last_name(call.func) in _RUNS_COROUTINES

    def _reference(self, node: cst.Name | cst.Attribute) -> None:
        """A converted function passed as a value (``d.addCallback(self.setup)``, ``callLater(0, f)``): whoever
        calls it now gets a coroutine, which Twisted neither awaits nor runs."""
        parent = self.get_metadata(ParentNodeProvider, node)
        if not isinstance(parent, cst.Arg) or not self._newly_async(node):
            return
        call = self.get_metadata(ParentNodeProvider, parent)
        called = _last_name(call.func) if isinstance(call, cst.Call) else ""
        if called in _RUNS_COROUTINES:
            return
        if called in _TAKES_CALLBACKS:
            self.wraps += 1
            self._report(node, f"{_code(node)} is a coroutine function now, given to .{called}(): wrapped in "
                               "deferred_api() so that Twisted gets a Deferred and the body runs at once; port the "
                               "caller to await it")
            return
        self._report(node, f"{_code(node)} is a coroutine function now and is passed as a value: whatever calls it "
                           "gets a coroutine, which runs only once awaited; pass a function that wraps the call in "
                           "as_deferred(), or await it")

    def visit_Arg(self, node: cst.Arg) -> None:
        if isinstance(node.value, cst.Name | cst.Attribute):
            self._reference(node.value)

    def _chained_on(self, node: cst.Call) -> bool:
        """Whether ``node`` is the receiver of an ``.addCallback``-like call (reported as such instead)."""
        parent = self.get_metadata(ParentNodeProvider, node)
        return isinstance(parent, cst.Attribute) and parent.attr.value in _CALLBACK_METHODS

    def _calls_newly_async(self, node: cst.Call) -> bool:
        return self._newly_async(node.func)

    def _newly_async(self, func: cst.BaseExpression) -> bool:
        """Whether ``func`` names a function this run made a coroutine function; on a receiver of unknown type,
        whether a method of that name was converted in any class of the tree (conservative: reported)."""
        return newly_async(func, self.newly_async, self.index)

    def _report_looping_call(self, node: cst.Call) -> None:
        parent = self.get_metadata(ParentNodeProvider, node)
        interval = "N"
        if isinstance(parent, cst.Assign) and len(parent.targets) == 1:
            interval = self.intervals.get(_code(parent.targets[0].target), interval)
        fn = _code(node.args[0].value) if node.args else "f"
        self._report(node, f"LoopingCall({fn}): make it a @task(every={interval}) of bridge.tasks, owned by one "
                           "stack in the plan (MIGRATION.md, background tasks); left unchanged")


class _SleepIdiom(ScopedTransformer):
    """``d = Deferred(); reactor.callLater(s, d.callback, v); x = await d`` -> ``x = await asyncio.sleep(s, v)``."""

    def leave_IndentedBlock(self, original_node: cst.IndentedBlock, updated_node: cst.IndentedBlock) -> cst.IndentedBlock:
        if self.depth:
            return updated_node
        body = list(updated_node.body)
        out: list[cst.BaseStatement] = []
        i = 0
        while i < len(body):
            merged = self._match(body, i)
            if merged is not None:
                out.append(merged)
                i += 3
            else:
                out.append(body[i])
                i += 1
        return updated_node.with_changes(body=out) if len(out) != len(body) else updated_node

    @staticmethod
    def _single(stmt: cst.BaseStatement) -> cst.BaseSmallStatement | None:
        if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1:
            return stmt.body[0]
        return None

    def _match(self, body: Sequence[cst.BaseStatement], i: int) -> cst.BaseStatement | None:
        if i + 2 >= len(body):
            return None
        make, schedule, wait = (self._single(s) for s in body[i:i + 3])
        if not (isinstance(make, cst.Assign) and len(make.targets) == 1 and isinstance(make.targets[0].target, cst.Name)
                and call_named(make.value, DEFERRED) and not make.value.args):  # type: ignore[attr-defined]
            return None
        d = make.targets[0].target.value
        if not (isinstance(schedule, cst.Expr) and call_named(schedule.value, REACTOR_CALL_LATER)):
            return None
        args = schedule.value.args  # type: ignore[attr-defined]
        if not (2 <= len(args) <= 3 and all(a.keyword is None and not a.star for a in args)
                and m.matches(args[1].value, m.Attribute(value=m.Name(d), attr=m.Name("callback")))):
            return None
        awaited = wait.value if isinstance(wait, cst.Expr | cst.Assign) else None
        if not (isinstance(awaited, cst.Await) and m.matches(awaited.expression, m.Name(d))):
            return None
        if any(m.findall(stmt, m.Name(d)) for stmt in body[i + 3:]):
            return None  # the Deferred is used again: not just a sleep
        sleep_args = [cst.Arg(args[0].value)] + ([cst.Arg(args[2].value)] if len(args) == 3 else [])
        sleep = cst.Call(func=cst.parse_expression("asyncio.sleep"), args=sleep_args)
        new_wait = wait.with_changes(value=awaited.with_changes(expression=sleep))  # type: ignore[union-attr]
        return body[i + 2].with_changes(  # type: ignore[return-value]
            body=[new_wait], leading_lines=body[i].leading_lines  # type: ignore[attr-defined]
        )


class _Awaits(ScopedTransformer):
    """Make every ``await`` in the function's own body await something asyncio can await."""

    def __init__(self, async_names: set[str], wrap_unknown: bool, index: ProjectIndex, known: Known | None = None,
                 helper: bool = True) -> None:
        super().__init__()
        self.async_names, self.wrap_unknown, self.index = async_names, wrap_unknown, index
        self.known, self.helper = known, helper

    def _elsewhere(self, name: str) -> bool:
        kinds = self.index.function_kinds(name)
        return bool(kinds) and kinds <= COROUTINE

    def _ambiguous(self, expr: cst.BaseExpression) -> bool:
        if not isinstance(expr, cst.Call):
            return False
        func = expr.func
        name = func.attr.value if isinstance(func, cst.Attribute) else func.value if isinstance(func, cst.Name) else ""
        if name in self.index.patched and (name in self.async_names or self.index.function_kinds(name)
                                           or self.index.method_kinds(name)):
            return True  # replaced at run time somewhere in the tree: whatever it returns, maybe_awaitable takes it
        return (isinstance(func, cst.Attribute) and not _self_call(func)
                and method_call(self.index, func) == "ambiguous")

    def _is_async(self, expr: cst.BaseExpression) -> bool:
        if not isinstance(expr, cst.Call):
            return False
        func = expr.func
        if isinstance(func, cst.Name):
            return func.value in self.async_names or self._elsewhere(func.value) or func.value in (
                "as_future", "maybe_awaitable")
        if isinstance(func, cst.Attribute):
            if m.matches(func, ASYNCIO_CALL):
                return True
            if _self_call(func):  # a method of this module's classes, or of a class anywhere in the run
                return func.attr.value in self.async_names or method_call(self.index, func) == "coroutine"
            if method_call(self.index, func) == "coroutine":
                return True  # every method of that name in the tree is a coroutine function
            if isinstance(func.value, cst.Name) and self._elsewhere(func.attr.value):
                return True  # module.function, converted in another file of the run
            return func.attr.value in _POOL_ASYNC_METHODS and _pool_like(func.value)
        return False

    def _convert(self, expr: cst.BaseExpression) -> cst.BaseExpression | None:
        """The asyncio form of a Twisted call, or None if it has none here."""
        if not isinstance(expr, cst.Call):
            return None
        if call_named(expr, DEFER_TO_THREAD):
            return expr.with_changes(func=cst.parse_expression("get_pool().run_in_thread"))
        func = expr.func
        if isinstance(func, cst.Attribute) and func.attr.value in _POOL_DEFERRED_METHODS and _pool_like(func.value):
            return expr.with_changes(func=func.with_changes(attr=cst.Name(_POOL_DEFERRED_METHODS[func.attr.value])))
        if _deferlater_sleep(expr):
            return cst.Call(func=cst.parse_expression("asyncio.sleep"), args=[expr.args[1].with_changes(comma=cst.MaybeSentinel.DEFAULT)])
        if call_named(expr, GATHER_RESULTS) and expr.args and _sequence_elements(expr.args[0].value):
            return self._gather(expr.args[0].value)
        return None

    def unknown(self, expr: cst.BaseExpression) -> bool:
        """Whether an awaited ``expr`` would go to ``as_future`` without being known to give a Deferred."""
        return (self.wrap_unknown and self.known is not None and self._convert(expr) is None
                and not self._ambiguous(expr) and not self._is_async(expr) and not self.known.awaitable(expr))

    def _awaitable(self, expr: cst.BaseExpression) -> cst.BaseExpression:
        converted = self._convert(expr)
        if converted is not None:
            return converted
        if self.wrap_unknown and (self._ambiguous(expr) or (self.helper and self.unknown(expr))):
            return cst.Call(func=cst.Name("maybe_awaitable"), args=[cst.Arg(expr)])
        if self._is_async(expr) or not self.wrap_unknown:
            return expr
        return cst.Call(func=cst.Name("as_future"), args=[cst.Arg(expr)])

    def _gather(self, seq: cst.BaseExpression) -> cst.Call:
        gather = cst.parse_expression("asyncio.gather")
        if isinstance(seq, cst.ListComp | cst.GeneratorExp):
            star = cst.ListComp(elt=self._awaitable(seq.elt), for_in=seq.for_in)
            return cst.Call(func=gather, args=[cst.Arg(star, star="*")])
        elements = [e.value for e in seq.elements]  # type: ignore[attr-defined]
        args = [cst.Arg(self._awaitable(e), star="*" if isinstance(e, cst.StarredElement) else "") for e in elements]
        return cst.Call(func=gather, args=args)

    def leave_Await(self, original_node: cst.Await, updated_node: cst.Await) -> cst.Await:
        if self.depth:
            return updated_node
        return updated_node.with_changes(expression=self._awaitable(updated_node.expression))

    def leave_Expr(self, original_node: cst.Expr, updated_node: cst.Expr) -> cst.Expr:
        if self.depth or not call_named(updated_node.value, REACTOR_CALL_LATER):
            return updated_node
        if not _call_later_convertible(updated_node.value):  # type: ignore[arg-type]
            return updated_node  # reported by the planner
        call = updated_node.value
        return updated_node.with_changes(
            value=call.with_changes(func=cst.parse_expression("asyncio.get_running_loop().call_later"))  # type: ignore[attr-defined]
        )


def awaits(async_names: set[str], wrap_unknown: bool = True, index: ProjectIndex | None = None,
           known: Known | None = None, helper: bool = True) -> _Awaits:
    """The rewrite of one converted function's awaits; its :meth:`~_Awaits.unknown` tells which lines it lists."""
    return _Awaits(async_names, wrap_unknown, index or ProjectIndex(), known, helper)


def asyncio_body(body: cst.BaseSuite, async_names: set[str], wrap_unknown: bool = True,
                 index: ProjectIndex | None = None, local_classes: dict[str, ClassInfo] | None = None,
                 known: Known | None = None, helper: bool = True) -> cst.BaseSuite:
    """Rewrite one converted function's body (its ``yield``s already ``await``s) for asyncio.

    ``wrap_unknown`` is False for ``@deferred_api async def`` functions: their
    ``await`` may already take asyncio awaitables, so only the known Twisted
    calls are converted and nothing else is wrapped. With ``known`` (what the
    function's module knows), a value not known to give a Deferred is awaited
    through ``maybe_awaitable`` (unless ``helper`` is False: ``as_future`` then).
    """
    return body.visit(_SleepIdiom()).visit(awaits(async_names, wrap_unknown, index, known, helper))
