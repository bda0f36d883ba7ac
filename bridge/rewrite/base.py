"""What both rewrites share: the report line, and a transformer that knows when it is inside a nested scope.

:mod:`bridge.rewrite.transform` (the Twisted target, and the driver) and
:mod:`bridge.rewrite.to_asyncio` (the asyncio target) both build on these, so
neither has to import the other for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

__all__ = ["NESTED", "NESTED_SCOPES", "Report", "ScopedTransformer"]

#: The nodes that open a scope of their own: a ``yield`` or ``returnValue`` inside them is not the function's.
NESTED_SCOPES = (cst.FunctionDef, cst.Lambda, cst.ClassDef, cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)
NESTED = frozenset(NESTED_SCOPES)  # ``type(node) in NESTED``: the same test (no subclasses), cheaper


@dataclass(frozen=True)
class Report:
    """Something left unchanged (or for a person to finish): the 1-based line and why."""

    line: int
    reason: str



class ScopedTransformer(cst.CSTTransformer):
    """A transformer that knows whether it is inside a nested scope of the function it rewrites."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0

    def on_visit(self, node: cst.CSTNode) -> bool:
        if type(node) in NESTED:
            self.depth += 1
        return super().on_visit(node)

    def on_leave(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        if type(original_node) in NESTED:
            self.depth -= 1
        return super().on_leave(original_node, updated_node)
