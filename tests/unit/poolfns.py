"""Functions the pool dispatch tests send to workers (importable by the workers)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def record(directory: str, name: str) -> int:
    """Append this worker's pid to ``directory/name``: a file with one line per run of the call."""
    with open(Path(directory, name), "a") as out:
        out.write(f"{os.getpid()}\n")
    return os.getpid()


def runs(directory: str, name: str) -> list[int]:
    path = Path(directory, name)
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def allocate(megabytes: int) -> int:
    """Touch ``megabytes`` of fresh memory; returns the byte count."""
    block = bytearray(megabytes * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block)


def memory_status() -> dict[str, int]:
    """This process's VmSize / VmData / VmRSS in kB and its RLIMIT_DATA soft limit in bytes."""
    import resource

    out: dict[str, int] = {"rlimit_data": resource.getrlimit(resource.RLIMIT_DATA)[0]}
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmSize", "VmData", "VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def _refuse_to_load() -> Any:
    raise ValueError("this argument cannot be rebuilt in a worker")


class Unloadable:
    """Pickles fine in the caller, fails to unpickle in the worker."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _refuse_to_load, ()


def echo(value: Any) -> Any:
    return value


class Scaled:
    """A callable object with state: it must travel with the state it has at each call."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, value: int) -> int:
        return value * self.factor


def describe(*args: Any, **kwargs: Any) -> list[tuple[str, int, bytes]]:
    """Each argument's type name, length and first bytes, in order (positional, then keyword by name)."""
    values = [*args, *(kwargs[name] for name in sorted(kwargs))]
    return [(type(v).__name__, len(v), bytes(v[:4])) for v in values]
