"""Text recognition with RapidOCR (PaddleOCR models on onnxruntime; the wheel ships them).

The engine loads three ONNX models (detection, orientation, recognition), so it
is built once per process: ``init_ocr`` is meant as the pool initializer, and
``engine_loads`` lets a test prove no call builds another.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import cv2

from ._checks import bounded_output
from .images import DEFAULT_MAX_PIXELS, decode_image
from .threads import native_threads

if TYPE_CHECKING:
    from rapidocr_onnxruntime import RapidOCR

_engine: RapidOCR | None = None
_loads = 0


def init_ocr() -> RapidOCR:
    """Build the OCR engine into this process's global, once; later calls return it."""
    global _engine, _loads
    if _engine is not None:
        return _engine
    from rapidocr_onnxruntime import RapidOCR

    threads = min(native_threads(), os.cpu_count() or 1)  # RapidOCR ignores values above cpu_count
    cv2.setNumThreads(native_threads())
    engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)
    # RapidOCR gives its loggers their own DEBUG-level stderr handlers; keep only real problems.
    for name in ("RapidOCR", "OrtInferSession"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _engine = engine
    _loads += 1
    return engine


def engine_loads() -> int:
    """How many times this process has built the OCR engine (1 once warm, never more)."""
    return _loads


def read_text(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """Recognise the text lines in an encoded image, in reading order.

    Returns ``{"width", "height", "lines": [{"text", "box", "score"}, ...]}``
    where ``box`` is the line's four corners ``[[x, y], ...]`` (clockwise from
    top-left, 0.1 px) and ``score`` the recognition confidence (4 decimals).
    """
    pixels = decode_image(data, max_pixels)
    height, width = pixels.shape[:2]
    engine = _engine if _engine is not None else init_ocr()
    # RapidOCR takes arrays as BGR (OpenCV's order).
    image = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR if pixels.ndim == 2 else cv2.COLOR_RGB2BGR)
    found, _elapsed = engine(image)
    lines = [
        {
            "text": str(text).strip(),
            "box": [[round(float(x), 1), round(float(y), 1)] for x, y in box],
            "score": round(float(score), 4),
        }
        for box, text, score in (found or ())
        if str(text).strip()
    ]
    return bounded_output({"width": int(width), "height": int(height), "lines": reading_order(lines)},
                          f"{len(lines)} lines of text")


def reading_order(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Top to bottom, then left to right within a row.

    Boxes join a row when their vertical centre lies within half a line height
    (the mean of the box's and the row's heights) of the row's centre, so words
    on one baseline stay together even when detected slightly askew.
    """
    rows: list[list[dict[str, Any]]] = []
    for line in sorted(lines, key=lambda item: (_centre_y(item), _left(item))):
        centre, height = _centre_y(line), _height(line)
        if rows:
            row = rows[-1]
            row_centre = sum(_centre_y(item) for item in row) / len(row)
            row_height = sum(_height(item) for item in row) / len(row)
            if abs(centre - row_centre) <= 0.25 * (height + row_height):
                row.append(line)
                continue
        rows.append([line])
    return [line for row in rows for line in sorted(row, key=_left)]


def _centre_y(line: dict[str, Any]) -> float:
    ys = [point[1] for point in line["box"]]
    return (min(ys) + max(ys)) / 2


def _height(line: dict[str, Any]) -> float:
    ys = [point[1] for point in line["box"]]
    return max(ys) - min(ys)


def _left(line: dict[str, Any]) -> float:
    return min(point[0] for point in line["box"])
