"""Import fix-ups after a rewrite: add what the new code uses, drop what it stopped using.

libcst's own helpers (``AddImportsVisitor``, ``RemoveImportsVisitor``) crash once
Twisted is imported (zope.interface's ``__provides__``, Instagram/LibCST#1458),
so this is done by hand, conservatively: only names the rewrite itself made
unused are dropped, never an import that was unused before.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections import Counter

import libcst as cst
import libcst.matchers as m

from .ast_lines import nodes_of
from .names import EXPRESSIONS

__all__ = ["Names", "fix_imports", "names_of"]

# name the new code may use -> the import that binds it
_PROVIDERS: dict[str, tuple[str, str | None]] = {
    "asyncio": ("asyncio", None),
    "deferred_api": ("bridge", "deferred_api"),
    "as_future": ("bridge", "as_future"),
    "maybe_awaitable": ("bridge", "maybe_awaitable"),
    "get_pool": ("bridge", "get_pool"),
    "asyncio_test": ("bridge.testing", "asyncio_test"),
}
_DROPPABLE_MODULES = ("twisted", "bridge")


def _module_name(node: cst.ImportFrom) -> str:
    if node.module is None or node.relative:
        return ""
    return cst.Module(body=[]).code_for_node(node.module)


def _is_import_line(stmt: cst.CSTNode) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and all(
        isinstance(s, cst.Import | cst.ImportFrom) for s in stmt.body
    )


class Names:
    """Names read anywhere outside import statements (with how often), and what the imports bind.

    A conservative superset of what a module uses: attribute and keyword names count too.
    """

    def __init__(self, tree: ast.Module, nodes: list[ast.AST] | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.bound: set[str] = set()
        self.stars: set[str] = set()
        self.nested = False  # an import from a Twisted or bridge module other than at the top level
        self.nested_bound: set[str] = set()  # the names such imports bind
        top = set(map(id, tree.body))
        counts = self.counts
        for node in nodes if nodes is not None else nodes_of(tree):
            kind = type(node)
            if kind is ast.Name:
                counts[node.id] += 1  # type: ignore[attr-defined]
            elif kind is ast.Attribute:
                counts[node.attr] += 1  # type: ignore[attr-defined]
            elif kind is ast.keyword:
                if node.arg:  # type: ignore[attr-defined]
                    counts[node.arg] += 1  # type: ignore[attr-defined]
            elif kind is ast.Import:
                for alias in node.names:  # type: ignore[attr-defined]
                    self.bound.add(alias.asname or alias.name.split(".")[0])
            elif kind is ast.ImportFrom:
                assert isinstance(node, ast.ImportFrom)
                if id(node) not in top and node.module and node.module.startswith(_DROPPABLE_MODULES):
                    self.nested = True
                    self.nested_bound.update(a.asname or a.name for a in node.names)
                for alias in node.names:
                    if alias.name == "*":
                        self.stars.add(node.module if node.module and not node.level else "")
                    else:
                        self.bound.add(alias.asname or alias.name)

    @property
    def used(self) -> set[str]:
        return {name for name, count in self.counts.items() if count > 0}


def names_of(code: str | ast.Module, nodes: list[ast.AST] | None = None) -> Names:
    """The names of a module's code or ``ast``; ``nodes``: its ``ast.walk``, if already taken."""
    return Names(ast.parse(code) if isinstance(code, str) else code, nodes)


def _drop_made_unused(module: cst.Module, made_unused: set[str], nested_imports: bool = True) -> cst.Module:
    class Dropper(cst.CSTTransformer):
        def on_visit(self, node: cst.CSTNode) -> bool:
            return type(node) not in EXPRESSIONS and super().on_visit(node)  # imports are statements

        def leave_ImportFrom(
            self, original_node: cst.ImportFrom, updated_node: cst.ImportFrom
        ) -> cst.ImportFrom | cst.RemovalSentinel:
            if isinstance(updated_node.names, cst.ImportStar):
                return updated_node
            if not _module_name(updated_node).startswith(_DROPPABLE_MODULES):
                return updated_node

            keep = [a for a in updated_node.names if _bound_name(a) not in made_unused]
            if len(keep) == len(updated_node.names):
                return updated_node
            if not keep:
                return cst.RemoveFromParent()
            keep[-1] = keep[-1].with_changes(comma=updated_node.names[-1].comma)
            return updated_node.with_changes(names=keep)

    if not made_unused:
        return module
    # Top-level import lines that lose every name are removed here, so their blank lines and
    # comments pass to the next statement; nested ones are removed by the transformer.
    body: list[cst.BaseStatement] = []
    carried: list[cst.EmptyLine] = []
    for stmt in module.body:
        if nested_imports or _is_import_line(stmt):
            visit = not isinstance(stmt, cst.SimpleStatementLine) or _loses_names(stmt, made_unused)
        else:
            visit = False
        if visit:
            stmt = stmt.visit(Dropper())  # type: ignore[assignment]
        if isinstance(stmt, cst.RemovalSentinel) or (isinstance(stmt, cst.SimpleStatementLine) and not stmt.body):
            original_leading = list(getattr(stmt, "leading_lines", ()))
            carried = carried or original_leading
            continue
        if carried:
            leading = _merge_leading(carried, list(stmt.leading_lines)) if body else carried
            stmt = stmt.with_changes(leading_lines=leading)
            carried = []
        body.append(stmt)
    return module.with_changes(body=body)


def _bound_name(alias: cst.ImportAlias) -> str:
    if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
        return alias.asname.name.value
    return alias.evaluated_name


def _loses_names(line: cst.SimpleStatementLine, made_unused: set[str]) -> bool:
    """Whether the line holds a Twisted/bridge ``from`` import of a name made unused (else the drop leaves it be)."""
    return any(isinstance(small, cst.ImportFrom) and not isinstance(small.names, cst.ImportStar)
               and _module_name(small).startswith(_DROPPABLE_MODULES)
               and any(_bound_name(alias) in made_unused for alias in small.names) for small in line.body)


def _merge_leading(carried: list[cst.EmptyLine], own: list[cst.EmptyLine]) -> list[cst.EmptyLine]:
    """The removed line's leading lines on the next statement, without doubling blank lines."""
    if all(line.comment is None for line in carried + own):
        return max(carried, own, key=len)
    return carried + own


def _insert_at(body: list[cst.BaseStatement]) -> int:
    """After the module docstring and the leading block of imports."""
    at = 0
    for i, stmt in enumerate(body):
        docstring = i == 0 and m.matches(
            stmt, m.SimpleStatementLine(body=[m.Expr(m.SimpleString() | m.ConcatenatedString())])
        )
        if _is_import_line(stmt) or docstring:
            at = i + 1
        else:
            break
    return at


def _top_level_from_bridge(body: list[cst.BaseStatement], module: str = "bridge") -> int | None:
    """Index of a top-level ``from bridge import a, b`` line (one statement, no parentheses) to extend."""
    for i, stmt in enumerate(body):
        if (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1
                and isinstance(stmt.body[0], cst.ImportFrom) and _module_name(stmt.body[0]) == module
                and not isinstance(stmt.body[0].names, cst.ImportStar) and stmt.body[0].lpar is None):
            return i
    return None


def _extend_import_line(line: cst.SimpleStatementLine, names: list[str]) -> cst.SimpleStatementLine:
    imp = line.body[0]
    assert isinstance(imp, cst.ImportFrom) and not isinstance(imp.names, cst.ImportStar)
    aliases = list(imp.names)
    aliases[-1] = aliases[-1].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
    aliases += [cst.ImportAlias(name=cst.Name(n), comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
                for n in names]
    aliases[-1] = aliases[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
    return line.with_changes(body=[imp.with_changes(names=aliases)])


def _top_module(stmt: cst.BaseStatement) -> str:
    """The top-level package an import line imports from ("" if not an import line)."""
    if not _is_import_line(stmt):
        return ""
    imp = stmt.body[0]  # type: ignore[attr-defined]
    if isinstance(imp, cst.ImportFrom):
        return _module_name(imp).split(".")[0]
    return imp.names[0].evaluated_name.split(".")[0]


def _stdlib(name: str) -> bool:
    return name in sys.stdlib_module_names and name != "__future__"


def _insert_stdlib_import(body: list[cst.BaseStatement], line: cst.SimpleStatementLine) -> None:
    """Among the leading imports: after the last standard-library one, else first, in a group of its own."""
    end = _insert_at(body)
    block = [i for i in range(end) if _is_import_line(body[i])]
    stdlib = [i for i in block if _stdlib(_top_module(body[i]))]
    if stdlib:
        body.insert(stdlib[-1] + 1, line)
        return
    others = [i for i in block if _top_module(body[i]) != "__future__"]
    if not others:
        body.insert(end, line.with_changes(leading_lines=[cst.EmptyLine()] if end else []))
        return
    first = others[0]  # the new line takes over the blank lines above it, and a blank line ends its group
    body.insert(first, line.with_changes(leading_lines=body[first].leading_lines))
    body[first + 1] = body[first + 1].with_changes(leading_lines=[cst.EmptyLine()])


def _section(stmt: cst.BaseStatement, first_party: frozenset[str]) -> str:
    """isort's section of an import line: future, stdlib, third, first or local (relative)."""
    imp = stmt.body[0]  # type: ignore[attr-defined]
    if isinstance(imp, cst.ImportFrom) and imp.relative:
        return "local"
    top = _top_module(stmt)
    if top == "__future__":
        return "future"
    if _stdlib(top):
        return "stdlib"
    return "first" if top in first_party else "third"


_ORDER = ("future", "stdlib", "third", "first", "local")


def _insert_in_group(body: list[cst.BaseStatement], line: cst.SimpleStatementLine, section: str,
                     first_party: frozenset[str], module: str = "bridge") -> int:
    """Insert a ``from bridge import`` line where isort/ruff would put it; returns its index.

    Among the module's top-level import lines before its first def or class: in
    ``section``'s group, in alphabetical order among the ``from`` lines; else as a
    group of its own between the groups before and after it.
    """
    header = next((i for i, stmt in enumerate(body) if isinstance(stmt, cst.FunctionDef | cst.ClassDef)), len(body))
    imports = [(i, _section(body[i], first_party)) for i in range(header) if _is_import_line(body[i])]
    mine = [i for i, sec in imports if sec == section]
    if mine:
        later = [i for i in mine if isinstance(body[i].body[0], cst.ImportFrom)  # type: ignore[attr-defined]
                 and _module_name(body[i].body[0]).lower() > module]  # type: ignore[attr-defined]
        if later:
            at = later[0]  # takes over that line's blank lines and comments; it follows in the same group
            leading = list(body[at].leading_lines)
            before = [sec for i, sec in imports if i < at]
            if not leading and before and before[-1] != section:
                leading = [cst.EmptyLine()]  # the source ran two groups together: this one starts here
            body.insert(at, line.with_changes(leading_lines=leading))
            body[at + 1] = body[at + 1].with_changes(leading_lines=[])
            return at
        at = mine[-1] + 1
        body.insert(at, line)
        return at
    after = [i for i, sec in imports if _ORDER.index(sec) > _ORDER.index(section)]
    if after:  # a group of its own before the next group
        at = after[0]
        body.insert(at, line.with_changes(leading_lines=body[at].leading_lines or [cst.EmptyLine()]))
        body[at + 1] = body[at + 1].with_changes(leading_lines=[cst.EmptyLine()])
        return at
    if imports:  # a group of its own after the last one
        at = imports[-1][0] + 1
    else:
        at = _insert_at(body)
    leading = [cst.EmptyLine()] if at else []
    body.insert(at, line.with_changes(leading_lines=leading))
    return at


@functools.lru_cache(maxsize=64)
def _statement(code: str) -> cst.BaseStatement:
    """A parsed import line; libcst's nodes are immutable, so one parse serves every module."""
    return cst.parse_statement(code)


def _add_missing(module: cst.Module, wanted: list[str], first_party: frozenset[str] = frozenset()) -> cst.Module:
    """``import asyncio`` and the ``from bridge import ...`` names the new code uses but nothing binds."""
    if not wanted:
        return module
    body = list(module.body)
    for source in ("bridge", "bridge.testing"):
        from_bridge = sorted(n for n in wanted if _PROVIDERS[n][0] == source)
        if not from_bridge:
            continue
        existing = _top_level_from_bridge(body, source)
        if existing is not None:
            body[existing] = _extend_import_line(body[existing], from_bridge)  # type: ignore[arg-type]
        else:
            line = _statement(f"from {source} import {', '.join(from_bridge)}\n")
            at = _insert_in_group(body, line, "first" if "bridge" in first_party else "third",  # type: ignore[arg-type]
                                  first_party, source)
            _space_after_imports(body, at + 1)
    if "asyncio" in wanted:
        _insert_stdlib_import(body, _statement("import asyncio\n"))  # type: ignore[arg-type]
        _space_after_imports(body, _insert_at(body))
    return module.with_changes(body=body)


def _space_after_imports(body: list[cst.BaseStatement], after: int) -> None:
    """Blank lines between the imports and the code that follows, as formatters leave them."""
    if after < len(body) and not _is_import_line(body[after]) and not body[after].leading_lines:
        blank = 2 if isinstance(body[after], cst.FunctionDef | cst.ClassDef) else 1
        body[after] = body[after].with_changes(leading_lines=[cst.EmptyLine()] * blank)


def fix_imports(new: cst.Module, before: Names, after: Names | set[str],
                first_party: frozenset[str] = frozenset()) -> cst.Module:
    """The new module without the Twisted/bridge imports the rewrite made unused, with the ones it made necessary.

    ``before`` are the original's names; ``after`` the new module's, or just the names it uses when the
    rewrite knows them (its imports are the original's then).
    """
    used = after if isinstance(after, set) else after.used
    imports = before if isinstance(after, set) else after
    original = before.used
    made_unused = original - used
    wanted = [
        name for name, (mod, _) in _PROVIDERS.items()
        if name in used and name not in imports.bound and mod not in imports.stars and name not in original
    ]
    if not wanted and not made_unused:
        return new
    # Added first, after the leading imports, so a Twisted import line dropped next hands over its blank lines.
    return _drop_made_unused(_add_missing(new, wanted, first_party), made_unused, imports.nested)
