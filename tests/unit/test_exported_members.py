"""The public surface: ``bridge.__all__`` is sorted and complete, every name resolves to its one home,
importing the package loads nothing heavy, and every error cutover defines sits under ``CutoverError``."""

from __future__ import annotations

import inspect
import subprocess
import sys

import bridge
import bridge.errors


def test_all_is_sorted_unique_and_every_name_resolves_to_a_bridge_object() -> None:
    assert bridge.__all__ == sorted(set(bridge.__all__))
    for name in bridge.__all__:
        value = getattr(bridge, name)
        assert getattr(value, "__module__", "").startswith("bridge."), name
    assert set(dir(bridge)) >= set(bridge.__all__)


def test_errors_all_lists_every_error_defined_there() -> None:
    assert bridge.errors.__all__ == sorted(bridge.errors.__all__)
    defined = {name for name, value in vars(bridge.errors).items()
               if inspect.isclass(value) and value.__module__ == "bridge.errors" and not name.startswith("_")}
    assert defined == set(bridge.errors.__all__) - {"answer_for"}


def test_every_exception_class_cutover_defines_is_a_cutover_error() -> None:
    import bridge.cli  # noqa: F401  (the command line, the host and everything they load)
    import bridge.host.runtime  # noqa: F401
    import bridge.jobs  # noqa: F401
    import bridge.rewrite  # noqa: F401

    found = []
    for module_name, module in list(sys.modules.items()):
        if module_name != "bridge" and not module_name.startswith("bridge."):
            continue
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, Exception) and not issubclass(value, Warning)
                    and value.__module__ == module_name
                    and not name.startswith("_")):
                found.append(value)
    assert found
    strays = sorted(f"{c.__module__}.{c.__qualname__}" for c in found if not issubclass(c, bridge.errors.CutoverError))
    assert strays == [], "errors outside the tree of bridge.errors.CutoverError"


def test_importing_the_package_loads_neither_twisted_nor_aiosqlite() -> None:
    probe = "import sys, bridge; print(sorted(m for m in ('twisted', 'aiosqlite', 'fastapi') if m in sys.modules))"
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert shown.stdout.strip() == "[]", shown
