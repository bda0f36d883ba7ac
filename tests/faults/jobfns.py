"""Job functions that misbehave on purpose, run in real pool workers by the fault tests.

Module level so they pickle. What must survive a worker's death (which attempt
this is, the pid the test should kill) lives in files.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any

MB = 1024 * 1024


def _announce(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: the test never reads half a pid."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.rename(path)


def block_until_killed(payload: bytes, pid_dir: str, survive_after: int) -> dict[str, Any]:
    """Attempts up to ``survive_after`` write ``<attempt>.pid`` and block until the test kills the worker; later ones return."""
    directory = Path(pid_dir)
    attempt = len(list(directory.glob("*.pid"))) + 1
    if attempt > survive_after:
        return {"attempt": attempt, "pid": os.getpid(), "payload": payload.decode()}
    _announce(directory / f"{attempt}.pid", str(os.getpid()))
    time.sleep(600)  # the test SIGKILLs this worker long before
    raise AssertionError("the worker was not killed")


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def exhaust_memory(payload: bytes, headroom_mb: int, want_mb: int) -> int:
    """Cap this worker's address space at its current size plus ``headroom_mb``, then try to take ``want_mb``.

    The cap stays on the worker afterwards, as a container's limit would.
    ``bytearray`` zero pages come from mmap untouched, so the attempt costs
    address space, not RAM: the machine is never at risk.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + headroom_mb * MB, hard))
    held = [bytearray(16 * MB) for _ in range(want_mb // 16)]
    return len(held) * 16  # only reached if the cap did not bite


def cap_address_space(headroom_mb: int) -> None:
    """A pool initializer: this worker's address space stops ``headroom_mb`` above its size after start-up."""
    import numpy  # noqa: F401 - the audio kernel's import, inside the cap's baseline

    import workloads  # noqa: F401

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + headroom_mb * MB, hard))


def hang(payload: bytes) -> None:
    """Never finishes on its own: only the kind's timeout (which kills the worker) ends it."""
    time.sleep(600)


def work(payload: bytes, rounds: int = 20_000) -> dict[str, Any]:
    """A short, well-behaved CPU job: the bystander that must not notice the faults."""
    total = 0
    for i in range(rounds):
        total = (total * 31 + payload[i % len(payload)]) % 1_000_003
    return {"payload": payload.decode(), "digest": total, "pid": os.getpid()}
