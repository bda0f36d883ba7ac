"""Parameter checks shared by the kernels: a bad value is the caller's error, not ours.

Also the bound on an answer's size: what a request costs must be bounded by
its input, and a small input with extreme parameters could ask for an answer
(and a job result row) of any size.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import InvalidInput


def as_bytes(data: object) -> bytes:
    """The payload as bytes; ``empty_input`` if there is none."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidInput("invalid_parameter", f"expected bytes, got {type(data).__name__}")
    raw = bytes(data)
    if not raw:
        raise InvalidInput("empty_input", "the input is empty (0 bytes)")
    return raw


def number(name: str, value: object, low: float, high: float, *, low_open: bool = False) -> float:
    """``value`` as a float within ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput("invalid_parameter", f"{name} must be a finite number, got {value!r}")
    if value < low or (low_open and value == low) or value > high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise InvalidInput("invalid_parameter", f"{name} must be in {interval}, got {value!r}")
    return float(value)


def integer(name: str, value: object, low: int, high: int) -> int:
    """``value`` as an int within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput("invalid_parameter", f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise InvalidInput("invalid_parameter", f"{name} must be in [{low}, {high}], got {value!r}")
    return value


#: The most compact JSON one answer may take, in bytes. Past it: 422 ``output_too_large``.
MAX_OUTPUT_BYTES = 1024 * 1024


def bounded_output(result: dict[str, Any], what: str, size: int | None = None) -> dict[str, Any]:
    """``result``, unless its compact JSON (or the given ``size`` estimate of it) is over :data:`MAX_OUTPUT_BYTES`."""
    if size is None:
        size = len(json.dumps(result, separators=(",", ":")))
    if size > MAX_OUTPUT_BYTES:
        raise InvalidInput(
            "output_too_large", f"the answer would hold {what}: {size} bytes of JSON, over the limit of {MAX_OUTPUT_BYTES}"
        )
    return result
