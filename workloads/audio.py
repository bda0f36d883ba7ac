"""Speech activity and signal-to-noise ratio of a PCM WAV, by frame energy (numpy only).

Deliberately simple and explainable: the noise floor is a low percentile of the
frame energies, a frame is speech when it stands ``threshold_db`` above that
floor, and the SNR compares the mean power of speech and non-speech frames.
"""

from __future__ import annotations

import io
import math
import struct
import wave
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._checks import as_bytes, bounded_output, integer, number
from .errors import InvalidInput

NOISE_PERCENTILE = 10.0
#: The highest sample rate any real recording uses (768 kHz DACs); a header claiming more is lying.
MAX_SAMPLE_RATE = 768_000
#: Analysis frames one request may ask for (100,000: 1000 s at the default 10 ms hop). Past it, 422
#: ``too_many_frames``: a tiny hop on a long file made millions of frames and a worker peak of 1.4 GB.
MAX_FRAMES = 100_000
_SILENCE = 1e-12  # power floor (-120 dBFS) so digital silence has a finite level
_EXTENSIBLE = 0xFFFE
#: The SubFormat GUID of WAVE_FORMAT_EXTENSIBLE PCM, after its 2-byte format code.
_PCM_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def analyze_audio(
    data: bytes,
    *,
    hop_ms: float = 10.0,
    threshold_db: float = 6.0,
    max_seconds: float = 600.0,
    max_frames: int = MAX_FRAMES,
) -> dict[str, Any]:
    """Measure speech activity in a PCM WAV (8/16/24/32-bit integer, any channels).

    Returns ``{"duration_s", "sample_rate", "channels", "frames", "speech_frames",
    "speech_ratio", "snr_db", "segments": [[start_s, end_s], ...]}``; ``frames``
    are analysis frames of ``hop_ms``, ``snr_db`` is None without both speech
    and noise frames, and segments are maximal runs of speech frames.

    The cost is bounded before any sample is decoded: ``too_many_frames``
    past ``max_frames`` analysis frames, and ``output_too_large`` for an
    answer over :data:`~workloads._checks.MAX_OUTPUT_BYTES` (its segments).
    """
    raw = as_bytes(data)
    hop_ms = number("hop_ms", hop_ms, 0.0, 1000.0, low_open=True)
    threshold_db = number("threshold_db", threshold_db, 0.0, 60.0)
    max_seconds = number("max_seconds", max_seconds, 0.0, math.inf, low_open=True)
    max_frames = integer("max_frames", max_frames, 1, 2**62)
    samples, rate, channels = _read_wav(raw, max_seconds, hop_ms, max_frames)

    hop = _hop(rate, hop_ms)
    starts = np.arange(0, samples.size, hop)
    sizes = np.diff(np.append(starts, samples.size))
    energy = np.add.reduceat(samples * samples, starts)  # a trailing short frame counts too
    power = energy / sizes
    level_db = 10.0 * np.log10(np.maximum(power, _SILENCE))
    floor_db = float(np.percentile(level_db, NOISE_PERCENTILE))
    speech = level_db > floor_db + threshold_db

    result = {
        "duration_s": samples.size / rate,
        "sample_rate": rate,
        "channels": channels,
        "frames": int(speech.size),
        "speech_frames": int(speech.sum()),
        "speech_ratio": round(float(speech.mean()), 4),
        "snr_db": _snr_db(energy, sizes, speech),
        "segments": _segments(speech, starts, sizes, rate),
    }
    return bounded_output(result, f"{len(result['segments'])} speech segments")


def _hop(rate: int, hop_ms: float) -> int:
    """Samples per analysis frame."""
    return max(1, round(rate * hop_ms / 1000.0))


def _snr_db(energy: NDArray[np.float64], sizes: NDArray[np.int64], speech: NDArray[np.bool_]) -> float | None:
    if speech.all() or not speech.any():
        return None
    p_speech = energy[speech].sum() / sizes[speech].sum()
    p_noise = energy[~speech].sum() / sizes[~speech].sum()
    if p_noise <= 0.0 or p_speech <= p_noise:  # digital-silence gaps have no measurable noise
        return None
    return round(10.0 * math.log10((p_speech - p_noise) / p_noise), 2)


def _segments(
    speech: NDArray[np.bool_], starts: NDArray[np.int64], sizes: NDArray[np.int64], rate: int
) -> list[list[float]]:
    edges = np.diff(np.concatenate(([0], speech.astype(np.int8), [0])))
    first = np.flatnonzero(edges == 1)
    last = np.flatnonzero(edges == -1) - 1
    begin, end = starts.tolist(), (starts + sizes).tolist()
    return [[round(begin[a] / rate, 4), round(end[b] / rate, 4)] for a, b in zip(first.tolist(), last.tolist(), strict=True)]


def _read_wav(raw: bytes, max_seconds: float, hop_ms: float, max_frames: int) -> tuple[NDArray[np.float64], int, int]:
    """Mono samples in [-1, 1), sample rate, channel count; every header claim checked, and the frame count."""
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise InvalidInput("not_pcm_wav", "not a WAV file: no RIFF/WAVE header")
    try:
        with wave.open(io.BytesIO(_extensible_pcm_as_pcm(raw)), "rb") as reader:
            channels, width, rate, declared = reader.getparams()[:4]
            if not 0 < rate <= MAX_SAMPLE_RATE:
                raise InvalidInput("corrupt_wav", f"the header declares a sample rate of {rate} Hz")
            if width > 4:
                raise InvalidInput("not_pcm_wav", f"{8 * width}-bit PCM is not supported (8, 16, 24 or 32-bit only)")
            if declared == 0:
                raise InvalidInput("empty_input", "the WAV file has no audio frames")
            frame_bytes = channels * width
            if declared * frame_bytes > len(raw):
                raise InvalidInput(
                    "corrupt_wav",
                    f"the header declares {declared} frames ({declared * frame_bytes} bytes) "
                    f"but the file is {len(raw)} bytes: truncated or lying header",
                )
            if declared / rate > max_seconds:
                raise InvalidInput("audio_too_long", f"audio is {declared / rate:.1f}s, over the limit of {max_seconds:g}s")
            frames = -(-declared // _hop(rate, hop_ms))
            if frames > max_frames:
                least = math.ceil(declared / max_frames) * 1000.0 / rate  # the hop (ms) that fits the limit
                raise InvalidInput(
                    "too_many_frames",
                    f"hop_ms={hop_ms:g} on {declared / rate:.1f}s of audio makes {frames} analysis frames, "
                    f"over the limit of {max_frames}: use hop_ms of at least {least:.4g}",
                )
            pcm = reader.readframes(declared)
    except wave.Error as exc:
        if str(exc).startswith("unknown format"):
            raise InvalidInput("not_pcm_wav", f"not integer PCM ({exc}); IEEE float and compressed WAVs are refused") from None
        raise InvalidInput("corrupt_wav", f"malformed WAV: {exc}") from None
    except (EOFError, struct.error) as exc:
        raise InvalidInput("corrupt_wav", f"malformed WAV, a chunk is cut short: {exc or 'unexpected end'}") from None
    if len(pcm) != declared * frame_bytes:
        raise InvalidInput(
            "corrupt_wav",
            f"the data chunk declares {declared * frame_bytes} bytes but holds {len(pcm)}: truncated file",
        )
    samples = _pcm_to_float(pcm, width).reshape(-1, channels).mean(axis=1)
    return samples, int(rate), int(channels)


def _pcm_to_float(pcm: bytes, width: int) -> NDArray[np.float64]:
    if width == 1:  # 8-bit WAV is unsigned, centred on 128
        return (np.frombuffer(pcm, np.uint8).astype(np.float64) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(pcm, "<i2") / 32768.0
    if width == 3:
        triples = np.frombuffer(pcm, np.uint8).reshape(-1, 3).astype(np.int32)
        values = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        return ((values ^ 0x800000) - 0x800000) / 8388608.0  # sign-extend 24 bits
    return np.frombuffer(pcm, "<i4") / 2147483648.0


def _extensible_pcm_as_pcm(raw: bytes) -> bytes:
    """WAVE_FORMAT_EXTENSIBLE holding integer PCM, relabelled plain PCM.

    Python 3.11's ``wave`` refuses the extensible tag, which most tools write
    for 24-bit or multichannel PCM; its fmt fields are the same, so changing
    the tag is enough. Anything else is returned unchanged for ``wave`` to judge.
    """
    offset = 12
    while offset + 8 <= len(raw):
        chunk_id, size = raw[offset : offset + 4], int.from_bytes(raw[offset + 4 : offset + 8], "little")
        if chunk_id == b"fmt ":
            body = raw[offset + 8 : offset + 8 + size]
            tag = int.from_bytes(body[:2], "little")
            if tag == _EXTENSIBLE and len(body) >= 40 and body[24:26] == b"\x01\x00" and body[26:40] == _PCM_GUID_TAIL:
                return raw[: offset + 8] + b"\x01\x00" + raw[offset + 10 :]
            return raw
        offset += 8 + size + (size & 1)
    return raw
