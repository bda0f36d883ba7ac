"""A memory ceiling per pool worker, so one runaway call fails alone instead of waking the OOM killer.

The ceiling is ``RLIMIT_DATA`` (private writable memory: the heap, anonymous
mappings, thread stacks), not ``RLIMIT_AS``: onnxruntime and OpenCV reserve
address space they never touch, and a warm worker of the example service
measured VSZ 715 MB against VmData 339 MB and RSS 185 MB, so an address-space
cap sized to the budget would refuse workers that fit. An allocation past the
ceiling fails in the worker (``MemoryError``); the worker answers that call
with it and exits, and a fresh worker replaces it.

Default size: 80 % of the memory budget divided among the workers (the rest
is the parent's headroom), never under :data:`FLOOR` (1 GiB: the example
service's worker peaked at VmData 726 MB reading a 1600x1200 image, and failed
inside onnxruntime under 700 MB). A library that allocates through its own
allocator may report the failure as its own error rather than ``MemoryError``;
the worker is replaced only after a ``MemoryError``. The budget is the lowest
cgroup limit on our cgroup and its parents (v2 ``memory.max``, v1
``memory.limit_in_bytes``), else physical memory. ``CUTOVER_WORKER_MEMORY``
or ``SharedPool(worker_memory=...)`` overrides it: bytes or ``512M``/``2G``;
``0`` or ``none`` disables the ceiling.
"""

from __future__ import annotations

import os
import re
import resource
from collections.abc import Mapping
from pathlib import Path

MEMORY_ENV = "CUTOVER_WORKER_MEMORY"
SHARE = 0.8
FLOOR = 2**30
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_UNLIMITED_V1 = 2**60  # v1 writes "no limit" as a huge page-aligned number


def parse_memory(text: str | int | None) -> int | None:
    """Bytes from ``"2G"``, ``"512MiB"``, ``"1073741824"`` or an int; None for ``0``/``none``/``off``."""
    if text is None:
        return None
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a worker memory ceiling must be at least 0, got {text}")
        return text or None
    value = text.strip().lower()
    if value in ("", "0", "none", "off", "unlimited"):
        return None
    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", value)
    if found is None:
        raise ValueError(f"cannot read a memory size from {text!r}: use bytes, or a number with K, M, G or T")
    number = int(float(found[1]) * _UNITS[found[2]])
    return number or None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text in ("", "max"):
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < _UNLIMITED_V1 else None


def _cgroup_limits(root: Path) -> list[int]:
    limits: list[int] = []
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return limits
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            base, name = root / "sys/fs/cgroup", "memory.max"
        elif "memory" in controllers.split(","):
            base, name = root / "sys/fs/cgroup/memory", "memory.limit_in_bytes"
        else:
            continue
        level = Path(path.lstrip("/"))
        while True:  # our cgroup and every parent, up to the mount (a namespace may hide the leaf)
            found = _read_int(base / level / name)
            if found is not None:
                limits.append(found)
            if level == Path("."):
                break
            level = level.parent
    return limits


def memory_budget(root: str | os.PathLike[str] = "/") -> int:
    """Bytes of memory this process may use: the lowest cgroup limit, else physical memory."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min([physical, *_cgroup_limits(Path(root))])


def worker_memory(setting: str | int | None, processes: int, environ: Mapping[str, str] | None = None,
                  root: str | os.PathLike[str] = "/") -> int | None:
    """The ceiling for each of ``processes`` workers: the setting, else the env var, else the default."""
    if setting is None:
        setting = (environ if environ is not None else os.environ).get(MEMORY_ENV)
        if setting is None:
            return max(FLOOR, int(memory_budget(root) * SHARE / max(1, processes)))
        try:
            return parse_memory(setting)
        except ValueError as exc:
            raise ValueError(f"{MEMORY_ENV}: {exc}") from None
    return parse_memory(setting)


def apply_memory_limit(limit: int | None) -> None:
    """In the worker: cap private writable memory at ``limit`` bytes (never above the hard limit)."""
    if not limit:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    soft = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
