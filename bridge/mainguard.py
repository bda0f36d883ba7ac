"""Refuse to start workers from a main module that every worker would run again.

With the ``spawn`` and ``forkserver`` start methods each worker re-imports the
parent's main script as ``__mp_main__``. Without an ``if __name__ ==
"__main__":`` guard, its top-level code (start a pool, a server, a reactor)
runs again in every worker, and the pool dies in a storm of
``BrokenProcessPool``. We check the script once, before the first worker
starts, and say what to change.
"""

from __future__ import annotations

import ast
import os
import sys
from types import ModuleType

from .errors import MainModuleGuardError


def _main_path_rerun_by_workers(main: ModuleType | None) -> str | None:
    """The path of the script workers would re-run, mirroring ``multiprocessing.spawn``."""
    if main is None:
        return None
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name is not None:
        # ``python -m pkg`` runs pkg/__main__.py, which spawn never re-runs.
        if name == "__main__" or name.endswith(".__main__"):
            return None
        return getattr(main, "__file__", None)
    path = getattr(main, "__file__", None)
    if path is None or os.path.splitext(os.path.basename(path))[0] == "ipython":
        return None
    return path


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If):
        return False
    tests = node.test.values if isinstance(node.test, ast.BoolOp) and isinstance(node.test.op, ast.And) else [node.test]
    return any(_is_name_is_main(test) for test in tests)


def _is_name_is_main(test: ast.expr) -> bool:
    if not isinstance(test, ast.Compare):
        return False
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    has_name = any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
    has_main = any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)
    return has_name and has_main


def has_main_guard(source: str) -> bool:
    """Whether a module's top level holds ``if __name__ == "__main__":``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return True  # not ours to judge; the import itself will say what is wrong
    return any(_is_main_guard(node) for node in tree.body)


def check_main_guard(start_method: str, main: ModuleType | None = None) -> None:
    """Raise :class:`MainModuleGuardError` if workers would re-run an unguarded main script."""
    if start_method not in ("spawn", "forkserver"):
        return
    path = _main_path_rerun_by_workers(sys.modules.get("__main__") if main is None else main)
    if path is None:
        return
    try:
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
    except (OSError, UnicodeDecodeError):
        return
    if has_main_guard(source):
        return
    raise MainModuleGuardError(
        f"{path} has no `if __name__ == \"__main__\":` guard. With the {start_method!r} start "
        "method every pool worker imports the main module again, so its top-level code "
        "(starting the pool, a server or the reactor) would run once more in each worker. "
        "Move that code into a function and call it under `if __name__ == \"__main__\":`."
    )
