"""Keep a function header's continuation lines aligned once ``def`` becomes ``async def``.

``def f(a,\n      b)`` aligns ``b`` under the first parameter, six columns to the
right of the ``def``'s start once it reads ``async def`` (E128 otherwise). Lines
indented to the opening parenthesis or deeper move right with it; hanging
indents (a fixed indent under the ``def``) stay where they are.
"""

from __future__ import annotations

import libcst as cst

__all__ = ["SHIFT", "realign_parameters"]

SHIFT = len("async ")


class _Shift(cst.CSTTransformer):
    def __init__(self, from_column: int, block_indent: int) -> None:
        super().__init__()
        self.from_column, self.block_indent = from_column, block_indent

    def _column(self, indent: bool, whitespace: str) -> int:
        """The absolute column a continuation line starts at (libcst keeps it relative to the block)."""
        return (self.block_indent if indent else 0) + len(whitespace)

    def leave_ParenthesizedWhitespace(
        self, original_node: cst.ParenthesizedWhitespace, updated_node: cst.ParenthesizedWhitespace
    ) -> cst.ParenthesizedWhitespace:
        indent = updated_node.last_line.value
        lines = [self._comment(line) for line in updated_node.empty_lines]
        changes: dict[str, object] = {"empty_lines": lines}
        if self._column(updated_node.indent, indent) >= self.from_column and not indent.strip(" "):
            changes["last_line"] = cst.SimpleWhitespace(indent + " " * SHIFT)
        return updated_node.with_changes(**changes)

    def _comment(self, line: cst.EmptyLine) -> cst.EmptyLine:
        """A comment line inside the parentheses, aligned with the parameters: moves with them."""
        ws = line.whitespace.value
        if line.comment is None or self._column(line.indent, ws) < self.from_column:
            return line
        return line.with_changes(whitespace=cst.SimpleWhitespace(ws + " " * SHIFT))


def realign_parameters(fn: cst.FunctionDef, columns: tuple[int, int] | None) -> cst.FunctionDef:
    """``fn`` (just made ``async def``) with its visually aligned header lines moved right by six columns.

    ``columns`` are the 0-based columns of the ``def`` and of the header's ``(`` before the rewrite
    (None: unknown, leave the header as it is).
    """
    if columns is None:
        return fn
    shift = _Shift(columns[1] + 1, columns[0])
    changes: dict[str, cst.CSTNode] = {"params": fn.params.visit(shift)}
    if isinstance(fn.whitespace_before_params, cst.ParenthesizedWhitespace):
        changes["whitespace_before_params"] = fn.whitespace_before_params.visit(shift)
    if fn.returns is not None:
        changes["returns"] = fn.returns.visit(shift)
    return fn.with_changes(**changes)
