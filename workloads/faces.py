"""Frontal face detection with OpenCV's Haar cascade: fast on a CPU and needs no download."""

from __future__ import annotations

from typing import Any

import cv2

from ._checks import bounded_output, integer, number
from .images import DEFAULT_MAX_PIXELS, decode_image
from .threads import native_threads

CASCADE = "haarcascade_frontalface_default.xml"

_classifier: cv2.CascadeClassifier | None = None


def load_face_model() -> cv2.CascadeClassifier:
    """The cascade, loaded once per process: use it as a pool initializer so no call pays the load."""
    global _classifier
    if _classifier is None:
        cv2.setNumThreads(native_threads())
        path = cv2.data.haarcascades + CASCADE
        classifier = cv2.CascadeClassifier(path)
        if classifier.empty():
            raise RuntimeError(f"OpenCV could not load the face cascade {path}")
        _classifier = classifier
    return _classifier


def detect_faces(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    scale_factor: float = 1.1,
    min_neighbors: int = 5,
    min_size: int = 30,
) -> dict[str, Any]:
    """Find frontal faces in an encoded image.

    Returns ``{"width", "height", "faces": [[x, y, w, h], ...]}`` in pixels,
    sorted by ``y`` then ``x`` so equal inputs give equal output. Parameters
    are OpenCV's ``detectMultiScale`` ones; ``min_size`` is the smallest face
    side in pixels.
    """
    scale = number("scale_factor", scale_factor, 1.0, 4.0, low_open=True)
    neighbors = integer("min_neighbors", min_neighbors, 0, 100)
    side = integer("min_size", min_size, 1, 100_000)
    pixels = decode_image(data, max_pixels)
    height, width = pixels.shape[:2]
    classifier = load_face_model()
    gray = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    gray = cv2.equalizeHist(gray)
    found = classifier.detectMultiScale(gray, scaleFactor=scale, minNeighbors=neighbors, minSize=(side, side))
    boxes = sorted(([int(v) for v in box] for box in found), key=lambda b: (b[1], b[0], b[2], b[3]))
    return bounded_output({"width": int(width), "height": int(height), "faces": boxes}, f"{len(boxes)} faces")
