"""The inbox folders data_sync works on, shared by both stacks' versions of the task.

Blocking file operations (call them from a thread): the layout is
``<var>/inbox/<kind>/<file>`` in, ``<var>/outbox/<kind>/<file>.json`` out, the
input then moved to ``<var>/done/<kind>/`` or ``<var>/failed/<kind>/``.
Dotfiles and unknown suffixes are never picked up, so a producer writes
``.name.tmp`` and renames it into place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: How many times a file that crashes a worker or times out is tried before it goes to failed/.
MAX_ATTEMPTS = 3
SUFFIXES = {
    "faces": {".jpg", ".jpeg", ".png", ".webp", ".bmp"},
    "ocr": {".jpg", ".jpeg", ".png", ".webp", ".bmp"},
    "audio": {".wav"},
    "domains": {".txt"},
}


def write_atomically(path: Path, payload: Any) -> None:
    """Write JSON so that readers see the whole file or none: temp file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def move(source: Path, target_dir: Path) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    os.replace(source, target_dir / source.name)


def pending(var_dir: Path) -> list[tuple[str, Path]]:
    """Inbox files ready to process, as (kind, path), in a stable order."""
    found = []
    for kind, suffixes in SUFFIXES.items():
        folder = var_dir / "inbox" / kind
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() not in suffixes or not path.is_file():
                continue
            found.append((kind, path))
    return found
