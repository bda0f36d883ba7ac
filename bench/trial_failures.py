"""Which failing tests of a trial run the codemod's report explains.

A failure is *explained* when one of its traceback's frames stands on a line
the codemod reported (a report or a helper await), or, where trial gives no
frame in the project (a setUp that failed before the test ran, a dirty
reactor), when a reported line lies inside the failing test method or its
class's ``setUp``/``tearDown``. Everything else is *unexplained*: a failure at
run time that no line of the report points at.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Failure", "classify", "failures"]

_SEPARATOR = re.compile(r"^={70,}$", re.MULTILINE)
_SUMMARY = re.compile(r"^-{70,}$", re.MULTILINE)
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_TEST_ID = re.compile(r"^[A-Za-z_][\w.]*\.[A-Za-z_]\w*$")
_FIXTURES = ("setUp", "tearDown", "setUpClass", "tearDownClass")


@dataclass
class Failure:
    """One failing test: its trial id, and each failure block's frames and last line (the error)."""

    test: str
    blocks: list[tuple[list[tuple[str, int]], str]] = field(default_factory=list)


def failures(output: str) -> dict[str, Failure]:
    """The failing tests of a trial run's output (``[FAIL]`` and ``[ERROR]`` blocks), by test id."""
    found: dict[str, Failure] = {}
    for block in _SEPARATOR.split(output):
        text = _SUMMARY.split(block.strip(), 1)[0].strip()  # the last block runs on into "Ran N tests"
        if not text.startswith(("[FAIL]", "[ERROR]")):
            continue
        body, _, tail = text.rpartition("\n\n")
        ids = [line.strip() for line in tail.splitlines() if _TEST_ID.match(line.strip())]
        frames = [(path, int(line)) for path, line in _FRAME.findall(body)]
        error = next((line.strip() for line in reversed(body.splitlines()) if line.strip()), "")
        for test in ids:
            found.setdefault(test, Failure(test)).blocks.append((frames, error[:200]))
    return found


def _spans(root: Path, test: str) -> list[tuple[Path, int, int]]:
    """File and line span of the test method and of its class's fixtures, found from the test id."""
    parts = test.split(".")
    for cut in range(len(parts) - 2, 0, -1):
        module = root.joinpath(*parts[:cut])
        for path in (module.with_suffix(".py"), module / "__init__.py"):
            if not path.is_file():
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            classes = {s.name: s for s in tree.body if isinstance(s, ast.ClassDef)}
            found, todo, seen = [], [parts[cut]], set()
            while todo:  # the class and its bases in the same module (a setUp it inherits)
                name = todo.pop()
                if name in seen or name not in classes:
                    continue
                seen.add(name)
                cls = classes[name]
                todo += [b.id if isinstance(b, ast.Name) else b.attr for b in cls.bases if isinstance(b, ast.Name | ast.Attribute)]
                for fn in cls.body:
                    if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and fn.name in (parts[-1], *_FIXTURES):
                        first = min([d.lineno for d in fn.decorator_list] + [fn.lineno])
                        found.append((path.resolve(), first, fn.end_lineno or fn.lineno))
            return found
    return []


def classify(found: dict[str, Failure], reported: set[tuple[Path, int]], root: Path,
             ignore: set[str] = frozenset()) -> dict[str, list[str]]:  # type: ignore[assignment]
    """``{"explained": [...], "unexplained": [...]}`` test ids; ``ignore``: tests that failed before the rewrite."""
    result: dict[str, list[str]] = {"explained": [], "unexplained": []}
    by_file: dict[Path, list[int]] = {}
    for path, line in reported:
        by_file.setdefault(path.resolve(), []).append(line)
    for test, failure in sorted(found.items()):
        if test in ignore:
            continue
        frames = {(Path(p).resolve(), n) for frames, _ in failure.blocks for p, n in frames}
        hit = any((path, line) in reported for path, line in frames) or any(
            first <= line <= last for path, first, last in _spans(root, test) for line in by_file.get(path, ()))
        result["explained" if hit else "unexplained"].append(test)
    return result
