"""Which ``yield x`` may become a plain ``await x``: only where ``x`` is known to be awaitable.

``inlineCallbacks`` passed a yielded non-Deferred (None, a plain value, a Mock)
straight back; ``await`` raises ``TypeError`` on it. So a ``yield`` becomes
``await`` only for, in order of the checks below:

* a call of a Twisted API that returns a Deferred (``defer.succeed``,
  ``deferToThread``, ``task.deferLater``, ``treq.get``...), spelled any usual way;
* an ``.addCallback``/``.addErrback``/``.addBoth``/``.addCallbacks``/``.addTimeout``
  chain (those return their Deferred);
* a call of a function or method that returns a Deferred or a coroutine after
  the rewrite: a module-level function of this file or, by name, of another file
  of the run; ``self.m()``/``cls.m()`` of the enclosing class or its bases;
* a local name every assignment of which, in the function's own scope, is one of
  the above.

Everything else is awaited through :func:`bridge.maybe_awaitable`, which passes
non-awaitables through as ``inlineCallbacks`` did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst
import libcst.matchers as m

from .index import AWAITABLE, ClassInfo, ProjectIndex
from .names import dotted_text

__all__ = ["CALLBACK_METHODS", "Assignments", "Known", "local_awaitables"]

CALLBACK_METHODS = frozenset({"addCallback", "addCallbacks", "addErrback", "addBoth", "addTimeout"})

# module -> functions (or Class.method) in it that return a Deferred
_TWISTED_APIS: dict[str, tuple[str, ...]] = {
    "twisted.internet.defer": ("succeed", "fail", "maybeDeferred", "gatherResults", "DeferredList", "Deferred",
                               "ensureDeferred", "Deferred.fromCoroutine", "Deferred.fromFuture", "execute"),
    "twisted.internet.threads": ("deferToThread", "deferToThreadPool"),
    "twisted.internet.task": ("deferLater",),
    "twisted.internet.utils": ("getProcessOutput", "getProcessValue", "getProcessOutputAndValue"),
    "treq": ("get", "post", "put", "patch", "delete", "head", "request", "content", "text_content",
             "json_content", "collect"),
}


# every spelling of those: ``defer.succeed`` and ``twisted.internet.defer.succeed``
_API = frozenset(f"{prefix}.{name}" for module, names in _TWISTED_APIS.items() for name in names
                 for prefix in (module.rsplit(".", 1)[-1], module))

_BARE_API = frozenset(name.split(".")[0] for names in _TWISTED_APIS.values() for name in names
                      if names is not _TWISTED_APIS["treq"])


@dataclass
class Known:
    """What one file's rewrite knows about callees: its own definitions, the run's index, its imports."""

    index: ProjectIndex
    functions: dict[str, str]  # this module's functions -> kind
    classes: dict[str, ClassInfo]
    twisted_names: frozenset[str]  # names this module imports from twisted (``from twisted... import succeed``)
    locals: frozenset[str] = field(default_factory=frozenset)  # of the function being rewritten
    class_name: str | None = None
    imported: frozenset[str] = field(default_factory=frozenset)  # names bound by this module's imports

    def function(self, name: str) -> bool:
        if name in self.index.patched:
            return False  # replaced at run time somewhere in the tree (a Mock may return a plain value)
        if name in self.functions:
            return self.functions[name] in AWAITABLE
        kinds = self.index.function_kinds(name)
        return bool(kinds) and kinds <= AWAITABLE

    def awaitable(self, expr: cst.BaseExpression) -> bool:
        if isinstance(expr, cst.Name):
            return expr.value in self.locals
        if not isinstance(expr, cst.Call):
            return False
        func = expr.func
        if dotted_text(func) in _API:
            return True
        if isinstance(func, cst.Name):
            if func.value in self.twisted_names and func.value in _BARE_API:
                return True
            return self.function(func.value)
        if not isinstance(func, cst.Attribute):
            return False
        attr = func.attr.value
        if attr in CALLBACK_METHODS:
            return True
        if attr in self.index.patched:
            return False
        if type(func.value) is cst.Name and func.value.value in ("self", "cls"):
            if self.class_name is None:
                return False
            kind = self.index.method_of(self.class_name, attr, self.classes)
            return kind in AWAITABLE
        if isinstance(func.value, cst.Name) and func.value.value in self.imported and func.value.value not in self.locals:
            # module.function, converted in another file of the run (and no method of that name)
            kinds = self.index.function_kinds(attr)
            return bool(kinds) and kinds <= AWAITABLE and not self.index.method_kinds(attr) - AWAITABLE
        return False


class Assignments(cst.CSTVisitor):
    """Every value assigned to each plain name in one function's own scope; None where it is not a plain ``=``.

    Mixed into the planner's analysis of a function (which counts ``depth``, the
    nesting of scopes inside it), so the body is walked once for both.
    """

    depth = 0

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, list[cst.BaseExpression | None]] = {}

    def _unknown(self, target: cst.CSTNode) -> None:
        if isinstance(target, cst.Name):
            self.values.setdefault(target.value, []).append(None)
            return
        for name in m.findall(target, m.Name()):
            assert isinstance(name, cst.Name)
            self.values.setdefault(name.value, []).append(None)

    def visit_Assign(self, node: cst.Assign) -> None:
        if self.depth:
            return
        for target in node.targets:
            if isinstance(target.target, cst.Name):
                self.values.setdefault(target.target.value, []).append(node.value)
            else:
                self._unknown(target.target)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if not self.depth and isinstance(node.target, cst.Name) and node.value is not None:
            self.values.setdefault(node.target.value, []).append(node.value)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        if not self.depth:
            self._unknown(node.target)

    def visit_For(self, node: cst.For) -> None:
        if not self.depth:
            self._unknown(node.target)

    def visit_WithItem(self, node: cst.WithItem) -> None:
        if not self.depth and node.asname is not None:
            self._unknown(node.asname.name)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self._unknown(node.target)  # binds in the function even from inside a comprehension

    def visit_ExceptHandler(self, node: cst.ExceptHandler) -> None:
        if not self.depth and node.name is not None:
            self._unknown(node.name.name)

    def visit_Global(self, node: cst.Global) -> None:
        for item in node.names:
            self._unknown(item.name)

    def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
        for item in node.names:
            self._unknown(item.name)


def _params(fn: cst.FunctionDef) -> set[str]:
    p = fn.params
    found = [*p.posonly_params, *p.params, *p.kwonly_params]
    found += [a for a in (p.star_arg, p.star_kwarg) if isinstance(a, cst.Param)]
    return {param.name.value for param in found}


def local_awaitables(fn: cst.FunctionDef, known: Known,
                     values: dict[str, list[cst.BaseExpression | None]]) -> frozenset[str]:
    """Local names of ``fn`` that only ever hold something known to be awaitable (a Deferred built here...)."""
    params = _params(fn)
    found: set[str] = set()
    changed = True
    while changed:  # d = Deferred(); e = d.addCallback(f): e follows d
        changed = False
        probe = Known(known.index, known.functions, known.classes, known.twisted_names, frozenset(found),
                      known.class_name, known.imported)
        for name, assigned in values.items():
            if name in found or name in params:
                continue
            if all(v is not None and probe.awaitable(v) for v in assigned):
                found.add(name)
                changed = True
    return frozenset(found)
