"""Run in a pool worker: a kernel, and the worker's peak resident memory while it ran (for the memory row)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import workloads

KERNELS = {"faces": workloads.detect_faces, "ocr": workloads.read_text, "audio": workloads.analyze_audio}


def _status_mib(name: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024
    raise LookupError(name)


def peak_rss(kernel: str, data: bytes, **params: Any) -> dict[str, Any]:
    """Reset this worker's high-water mark, run the kernel, report ``{"peak_mib", "before_mib", "outcome"}``."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_mib("VmRSS")
    try:
        KERNELS[kernel](data, **params)
        outcome = "accepted"
    except workloads.InvalidInput as exc:
        outcome = exc.code
    return {"peak_mib": _status_mib("VmHWM"), "before_mib": before, "outcome": outcome}
