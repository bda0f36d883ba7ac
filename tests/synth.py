"""Test inputs made in code: encoded images, hand-built PNG headers, WAVs with a known SNR."""

from __future__ import annotations

import io
import json
import struct
import wave
import zlib
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

RATE = 16_000
BURST_S = 0.5  # bursts and gaps alternate, each this long, starting with a gap


def encode(pixels: NDArray[np.uint8] | Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` RGB pixels, followed by an empty IDAT.

    Decoding it would fail (no pixel data), so being refused as too large
    proves the size was judged from the header alone.
    """

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def bursts(snr_db: float, seconds: float = 4.0, rate: int = RATE, seed: int = 7) -> NDArray[np.float64]:
    """Speech-like bursts (300 Hz + 1200 Hz, amplitude-modulated at 4 Hz) in white Gaussian noise.

    SNR is the burst signal's power during bursts over the noise power, the
    quantity ``analyze_audio`` estimates. Peak is scaled to 0.5 full scale.
    """
    t = np.arange(round(seconds * rate)) / rate
    on = np.floor(t / BURST_S) % 2 == 1
    assert on.any(), f"{seconds}s holds no burst: the first starts at {BURST_S}s"
    tone = np.sin(2 * np.pi * 300 * t) + 0.5 * np.sin(2 * np.pi * 1200 * t)
    signal = tone * (1 + 0.3 * np.sin(2 * np.pi * 4 * t)) * on
    noise_power = np.mean(signal[on] ** 2) / 10 ** (snr_db / 10)
    mixed = signal + np.random.default_rng(seed).normal(0.0, np.sqrt(noise_power), t.size)
    return 0.5 * mixed / np.abs(mixed).max()


def burst_times(seconds: float = 4.0) -> list[list[float]]:
    return [[start, start + BURST_S] for start in np.arange(BURST_S, seconds, 2 * BURST_S).tolist()]


def pcm(samples: NDArray[np.float64], width: int) -> bytes:
    """Interleaved little-endian integer PCM of ``samples`` (frames x channels, or mono) in [-1, 1)."""
    if width == 1:
        return np.clip(np.round(samples * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    scale = 2 ** (8 * width - 1)
    values = np.clip(np.round(samples * scale), -scale, scale - 1).astype("<i4")
    if width == 4:
        return values.tobytes()
    return values.view(np.uint8).reshape(-1, 4)[:, :width].tobytes()  # low bytes of each int32


def wav(samples: NDArray[np.float64], width: int = 2, channels: int = 1, rate: int = RATE) -> bytes:
    """A WAV written by the standard library's ``wave`` (plain PCM fmt chunk)."""
    frames = np.repeat(samples[:, None], channels, axis=1) if channels > 1 else samples
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(pcm(frames, width))
    return out.getvalue()


def riff(fmt_body: bytes, data: bytes, data_size: int | None = None) -> bytes:
    """A RIFF/WAVE file from a raw fmt chunk body and data; ``data_size`` may lie about the data."""
    declared = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body
    body += b"data" + struct.pack("<I", declared) + data + b"\x00" * (len(data) & 1)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt_chunk(tag: int, channels: int, rate: int, bits: int, extension: bytes = b"") -> bytes:
    align = channels * ((bits + 7) // 8)
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    return body + (struct.pack("<H", len(extension)) + extension if extension or tag == 0xFFFE else b"")


def extensible_fmt(channels: int, rate: int, bits: int, subformat: int) -> bytes:
    """A WAVE_FORMAT_EXTENSIBLE fmt body whose SubFormat GUID has format code ``subformat``."""
    guid = struct.pack("<H", subformat) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    return fmt_chunk(0xFFFE, channels, rate, bits, struct.pack("<HI", bits, 0) + guid)


def assert_plain(value: Any) -> None:
    """Only builtin JSON types all the way down: what crosses the pool and goes out as JSON."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str, key
            assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain(item)
    else:
        assert value is None or type(value) in (str, int, float, bool), (type(value), value)
    json.dumps(value, allow_nan=False)


def render(size: tuple[int, int], *words: tuple[int, int, str]) -> bytes:
    """Black 48 px text on white at the given (x, y) positions, as a PNG."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=48)  # Pillow's bundled scalable font
    for x, y, text in words:
        draw.text((x, y), text, fill="black", font=font)
    return encode(image)
