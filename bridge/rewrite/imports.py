"""Import fix-ups after a rewrite: add what the new code uses, drop what it stopped using.

libcst's own helpers (``AddImportsVisitor``, ``RemoveImportsVisitor``) crash once
Twisted is imported (zope.interface's ``__provides__``, Instagram/LibCST#1458),
so this is done by hand, conservatively: only names the rewrite itself made
unused are dropped, never an import that was unused before.
"""

from __future__ import annotations

import sys

import libcst as cst
import libcst.matchers as m

__all__ = ["fix_imports"]

# name the new code may use -> the import that binds it
_PROVIDERS: dict[str, tuple[str, str | None]] = {
    "asyncio": ("asyncio", None),
    "deferred_api": ("bridge", "deferred_api"),
    "as_future": ("bridge", "as_future"),
    "get_pool": ("bridge", "get_pool"),
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


def _used_names(module: cst.Module) -> set[str]:
    """Names read anywhere outside import statements (a conservative superset of what is used)."""
    inside_imports = {id(n) for imp in m.findall(module, m.Import() | m.ImportFrom()) for n in m.findall(imp, m.Name())}
    return {n.value for n in m.findall(module, m.Name()) if id(n) not in inside_imports}


def _bound_by_imports(module: cst.Module) -> tuple[set[str], set[str]]:
    """Names bound by imports, and modules star-imported."""
    bound: set[str] = set()
    stars: set[str] = set()
    for imp in m.findall(module, m.Import() | m.ImportFrom()):
        assert isinstance(imp, cst.Import | cst.ImportFrom)
        if isinstance(imp.names, cst.ImportStar):
            stars.add(_module_name(imp))  # type: ignore[arg-type]
            continue
        for alias in imp.names:
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                bound.add(alias.asname.name.value)
            else:
                bound.add(alias.evaluated_name.split(".")[0])
    return bound, stars


def _drop_made_unused(module: cst.Module, made_unused: set[str]) -> cst.Module:
    class Dropper(cst.CSTTransformer):
        def leave_ImportFrom(
            self, original_node: cst.ImportFrom, updated_node: cst.ImportFrom
        ) -> cst.ImportFrom | cst.RemovalSentinel:
            if isinstance(updated_node.names, cst.ImportStar):
                return updated_node
            if not _module_name(updated_node).startswith(_DROPPABLE_MODULES):
                return updated_node

            def bound(alias: cst.ImportAlias) -> str:
                if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                    return alias.asname.name.value
                return alias.evaluated_name

            keep = [a for a in updated_node.names if bound(a) not in made_unused]
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


def _top_level_from_bridge(body: list[cst.BaseStatement]) -> int | None:
    """Index of a top-level ``from bridge import a, b`` line (one statement, no parentheses) to extend."""
    for i, stmt in enumerate(body):
        if (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1
                and isinstance(stmt.body[0], cst.ImportFrom) and _module_name(stmt.body[0]) == "bridge"
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


def _add_missing(module: cst.Module, wanted: list[str]) -> cst.Module:
    """``import asyncio`` and the ``from bridge import ...`` names the new code uses but nothing binds."""
    if not wanted:
        return module
    body = list(module.body)
    from_bridge = sorted(n for n in wanted if _PROVIDERS[n][0] == "bridge")
    if from_bridge:
        existing = _top_level_from_bridge(body)
        if existing is not None:
            body[existing] = _extend_import_line(body[existing], from_bridge)  # type: ignore[arg-type]
        else:
            line = cst.parse_statement(f"from bridge import {', '.join(from_bridge)}\n")
            at = _insert_at(body)
            if at and not _is_import_line(body[at - 1]):  # straight after the docstring: keep a blank line
                line = line.with_changes(leading_lines=[cst.EmptyLine()])
            body.insert(at, line)  # type: ignore[arg-type]
            _space_after_imports(body, at + 1)
    if "asyncio" in wanted:
        _insert_stdlib_import(body, cst.parse_statement("import asyncio\n"))  # type: ignore[arg-type]
        _space_after_imports(body, _insert_at(body))
    return module.with_changes(body=body)


def _space_after_imports(body: list[cst.BaseStatement], after: int) -> None:
    """Blank lines between the imports and the code that follows, as formatters leave them."""
    if after < len(body) and not _is_import_line(body[after]) and not body[after].leading_lines:
        blank = 2 if isinstance(body[after], cst.FunctionDef | cst.ClassDef) else 1
        body[after] = body[after].with_changes(leading_lines=[cst.EmptyLine()] * blank)


def fix_imports(original: cst.Module, new: cst.Module) -> cst.Module:
    """Drop Twisted/bridge imports that the rewrite made unused; add the ones it made necessary."""
    made_unused = _used_names(original) - _used_names(new)
    used = _used_names(new)
    bound, stars = _bound_by_imports(new)
    wanted = [
        name for name, (mod, _) in _PROVIDERS.items()
        if name in used and name not in bound and mod not in stars and name not in _used_names(original)
    ]
    # Added first, after the leading imports, so a Twisted import line dropped next hands over its blank lines.
    return _drop_made_unused(_add_missing(new, wanted), made_unused)
