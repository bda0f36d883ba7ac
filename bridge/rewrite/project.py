"""The project's import layout, from its ruff or isort configuration, for placing ``from bridge import``.

ruff and isort put ``bridge`` with the third-party imports unless the project
names it first-party (``known-first-party``), as cutover's own tree does. The
nearest configuration above a file wins, as in ruff.
"""

from __future__ import annotations

import configparser
import functools
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["first_party"]


def _dig(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _names(value: Any) -> frozenset[str] | None:
    if isinstance(value, str):
        value = [v.strip() for v in value.replace("\n", ",").split(",")]
    if isinstance(value, list):
        return frozenset(str(v) for v in value if v)
    return None


def _from_toml(path: Path, prefix: tuple[str, ...]) -> frozenset[str] | None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    for keys in ((*prefix, "lint", "isort", "known-first-party"), (*prefix, "isort", "known-first-party")):
        found = _names(_dig(data, *keys))
        if found is not None:
            return found
    if prefix:  # pyproject.toml: isort's own table too
        return _names(_dig(data, "tool", "isort", "known_first_party"))
    return None


def _from_cfg(path: Path) -> frozenset[str] | None:
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (OSError, configparser.Error):
        return None
    for section in ("isort", "tool:isort"):
        if parser.has_option(section, "known_first_party"):
            return _names(parser.get(section, "known_first_party"))
    return None


@functools.lru_cache(maxsize=1024)
def first_party(folder: Path) -> frozenset[str]:
    """The first-party top-level packages for files in ``folder`` (empty: none configured)."""
    for here in (folder, *folder.parents):
        root = any((here / name).is_file() for name in _ROOT_MARKERS)
        for name, read in ((".ruff.toml", lambda p: _from_toml(p, ())), ("ruff.toml", lambda p: _from_toml(p, ())),
                           ("pyproject.toml", lambda p: _from_toml(p, ("tool", "ruff"))),
                           (".isort.cfg", _from_cfg), ("setup.cfg", _from_cfg)):
            candidate = here / name
            if candidate.is_file():
                found = read(candidate)
                if found is not None:
                    return found
        if root or (here / ".git").exists():
            break  # the project's own root: its configuration says nothing, so neither do we
    return frozenset()


_ROOT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg")
