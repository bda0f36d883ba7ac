"""Parity between the two stacks: one diff engine for shadow mode and the parity tests."""

from typing import Any

from .diff import (
    DEFAULT_HEADERS,
    DEFAULT_RULES,
    HEADER_RULES,
    KINDS,
    Diff,
    Difference,
    DiffRules,
    Exchange,
    diff,
    generalise,
)

__all__ = [
    "DEFAULT_HEADERS",
    "DEFAULT_RULES",
    "HEADER_RULES",
    "KINDS",
    "AssertSame",
    "Diff",
    "DiffRules",
    "Difference",
    "Exchange",
    "Service",
    "diff",
    "generalise",
    "route_key",
]

# The pytest plugin's names, imported on first use: the services import this package
# for the diff engine and must not pull in pytest or httpx (test-only dependencies).
_PLUGIN_NAMES = frozenset({"AssertSame", "Service", "route_key"})


def __getattr__(name: str) -> Any:
    if name in _PLUGIN_NAMES:
        from . import plugin

        return getattr(plugin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
