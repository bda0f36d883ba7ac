"""Decoding: sizes are judged from the header before any pixel is decoded, and every failure is InvalidInput."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.synth import encode, png_header_only
from workloads import InvalidInput, decode_image

RNG = np.random.default_rng(3)
RGB = RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8)


def test_png_decodes_losslessly_to_rgb() -> None:
    pixels = decode_image(encode(RGB))
    assert pixels.dtype == np.uint8 and pixels.shape == (30, 40, 3)
    assert np.array_equal(pixels, RGB)


def test_grayscale_stays_two_dimensional_and_jpeg_is_accepted() -> None:
    gray = RGB[..., 0]
    assert np.array_equal(decode_image(encode(gray)), gray)
    columns, rows = np.meshgrid(np.arange(40) * 6, np.arange(30) * 8)
    smooth = np.dstack([columns, rows, np.full_like(rows, 128)]).astype(np.uint8)
    jpeg = decode_image(encode(smooth, "JPEG", quality=95))
    assert jpeg.shape == (30, 40, 3)
    assert np.abs(jpeg.astype(int) - smooth).max() < 16  # lossy, but the same picture


def test_transparency_is_composited_on_white() -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # transparent black, as text PNGs often are
    rgba[0, 0] = (0, 0, 0, 255)
    pixels = decode_image(encode(rgba))
    assert pixels.shape == (4, 4, 3)
    assert pixels[0, 0].tolist() == [0, 0, 0]
    assert (pixels[1:] == 255).all()


def test_sixteen_bit_gray_is_rescaled_not_clipped() -> None:
    deep = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert decode_image(encode(deep)).tolist() == [[0, 128, 255]]


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    assert decode_image(encode(RGB, "JPEG", exif=exif)).shape == (40, 30, 3)


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (8_000, 8_000)])
def test_a_header_claiming_too_many_pixels_is_refused_before_decoding(width: int, height: int) -> None:
    # The file holds no pixel data: had it been decoded, it would fail as undecodable instead.
    with pytest.raises(InvalidInput, match="image") as caught:
        decode_image(png_header_only(width, height))
    assert caught.value.code == "image_too_large"
    with pytest.raises(InvalidInput) as caught:
        decode_image(png_header_only(100, 100))
    assert caught.value.code == "undecodable_image"


def test_the_limit_is_the_callers() -> None:
    data = encode(RGB)  # 1200 pixels
    assert decode_image(data, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(InvalidInput, match="40x30 = 1200 pixels, over the limit of 1199") as caught:
        decode_image(data, max_pixels=1199)
    assert caught.value.code == "image_too_large"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_input"),
        (b"\x00" * 64, "undecodable_image"),
        (encode(RGB)[:200], "undecodable_image"),  # truncated pixel data
        (encode(RGB, "JPEG")[:300], "undecodable_image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "undecodable_image"),  # never handed to Ghostscript
        ("not bytes", "invalid_parameter"),
    ],
    ids=["empty", "zeros", "truncated-png", "truncated-jpeg", "eps", "str"],
)
def test_bad_inputs_fail_with_a_code(data: bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_image(data)
    assert caught.value.code == code


def test_a_bad_limit_is_a_parameter_error() -> None:
    with pytest.raises(InvalidInput, match="max_pixels") as caught:
        decode_image(encode(RGB), max_pixels=0)
    assert caught.value.code == "invalid_parameter"
