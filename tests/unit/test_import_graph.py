"""The toolkit's import graph, read from the source: no cycles, no arrow up to the package root,
and nothing of the example application (legacy, modern, workloads) named anywhere in it."""

from __future__ import annotations

import ast
from pathlib import Path

BRIDGE = Path(__file__).resolve().parents[2] / "bridge"
EXAMPLE = ("legacy", "modern", "workloads")


def modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in BRIDGE.rglob("*.py"):
        parts = list(path.relative_to(BRIDGE.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def imports(name: str, path: Path, package: bool, known: dict[str, tuple[Path, bool]]) -> set[str]:
    """The bridge modules ``name`` imports when it is imported (module level; ``if TYPE_CHECKING`` left out)."""
    home = name if package else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = home.split(".")[: len(home.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in known else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, package, known) for name, (path, package) in known.items()}


def test_no_module_of_the_toolkit_names_the_example_application() -> None:
    for name, targets in graph().items():
        assert not [t for t in targets if t.split(".")[0] in EXAMPLE], name


def test_nothing_imports_the_package_root_and_the_graph_has_no_cycles() -> None:
    edges = graph()
    for name, targets in edges.items():
        assert "bridge" not in targets or name == "bridge", f"{name} imports the package root"
    inner = {name: {t for t in targets if t in edges and t != name
                    and not (name in edges and t.startswith(name + "."))}  # a package re-exporting its own parts
             for name, targets in edges.items()}
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(inner[node]):
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(target):], target]))
            if target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for name in sorted(inner):
        if name not in state:
            visit(name, [name])
