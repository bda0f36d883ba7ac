"""Image decoding shared by the kernels, with the size checked before any pixel is decoded.

A 40-byte PNG can declare 100000 x 100000 pixels (a decompression bomb): Pillow
reads only the header on ``Image.open``, so the size is checked there and the
pixels are decoded only once it is within ``max_pixels``.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from ._checks import as_bytes, integer
from .errors import InvalidInput

#: Decoded pixels one image may have (16 MP, 4000 x 4000). Past it: 422 ``image_too_large``, before
#: any pixel is decoded. Face detection peaks near 36 bytes a pixel (OpenCV's integral images and
#: pyramid): a 6000 x 6600 image took a worker to 1.5 GB, 16 MP takes it to 0.75 GB.
DEFAULT_MAX_PIXELS = 16_000_000
#: Formats never opened: Pillow's EPS plugin runs Ghostscript in a subprocess on untrusted input.
_REFUSED_FORMATS = frozenset({"EPS"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def _formats() -> list[str]:
    Image.init()
    return [name for name in Image.ID if name not in _REFUSED_FORMATS]


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> NDArray[np.uint8]:
    """Decode an encoded image (JPEG, PNG, anything Pillow reads but EPS) to uint8 pixels.

    Returns ``H x W`` for grayscale sources and ``H x W x 3`` RGB otherwise,
    upright (EXIF orientation applied), transparency composited on white and
    only the first frame of an animation. Raises :class:`InvalidInput` with
    ``empty_input``, ``image_too_large`` or ``undecodable_image``.
    """
    raw = as_bytes(data)
    integer("max_pixels", max_pixels, 1, 2**62)
    try:
        with warnings.catch_warnings():
            # Our own limit applies below; Pillow's bomb *warning* would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=_formats())
    except Image.DecompressionBombError as exc:
        raise InvalidInput("image_too_large", f"image refused before decoding: {exc}") from None
    except MemoryError:
        raise
    except Exception:  # Pillow plugins raise many types for bad headers
        # Pillow's own message names an in-memory object by address: say it without that,
        # so the same bytes always get the same answer (both stacks, every run).
        raise InvalidInput(
            "undecodable_image", f"not an image format this service reads ({len(raw)} bytes)"
        ) from None
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidInput(
            "image_too_large",
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}",
        )
    if width < 1 or height < 1:
        raise InvalidInput("undecodable_image", f"image has no pixels ({width}x{height})")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_array(image)
    except MemoryError:
        raise
    except Exception as exc:
        fmt = image.format or "image"
        raise InvalidInput("undecodable_image", f"{fmt} header is readable but its data is not: {exc}") from None


def _to_array(image: Image.Image) -> NDArray[np.uint8]:
    mode = image.mode
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, rgba)
        image = image.convert("L" if mode in ("LA", "La") else "RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode.startswith("I") or mode == "F":
        # 16/32-bit integer or float gray: rescale to 8 bits instead of letting convert() clip.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(values.max(initial=0.0)), 255.0)
        return np.ascontiguousarray(np.clip(values * (255.0 / top), 0, 255).round().astype(np.uint8))
    elif mode not in ("L", "RGB"):
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
