"""Speech activity and SNR on synthetic WAVs whose SNR and burst times are known."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from tests.synth import RATE, assert_plain, burst_times, bursts, extensible_fmt, fmt_chunk, pcm, riff, wav
from workloads import InvalidInput, analyze_audio


@pytest.mark.parametrize("snr_db", [10, 20, 30])
def test_snr_speech_ratio_and_segments_match_the_synthesis(snr_db: float) -> None:
    result = analyze_audio(wav(bursts(snr_db)))
    assert_plain(result)
    assert result["snr_db"] == pytest.approx(snr_db, abs=1.0)
    assert result["speech_ratio"] == pytest.approx(0.5, abs=0.1)
    assert (result["duration_s"], result["sample_rate"], result["channels"]) == (4.0, RATE, 1)
    assert (result["frames"], result["speech_frames"]) == (400, round(400 * result["speech_ratio"]))
    assert len(result["segments"]) == 4
    for (start, end), (expected_start, expected_end) in zip(result["segments"], burst_times(), strict=True):
        assert start == pytest.approx(expected_start, abs=0.02) and end == pytest.approx(expected_end, abs=0.02)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_every_integer_sample_width_reads_the_same_signal(width: int) -> None:
    result = analyze_audio(wav(bursts(20), width=width))
    assert result["snr_db"] == pytest.approx(20, abs=1.0)
    assert result["speech_ratio"] == pytest.approx(0.5, abs=0.1)
    assert result["duration_s"] == 4.0


def test_stereo_is_mixed_to_mono_and_counted_in_frames() -> None:
    result = analyze_audio(wav(bursts(20), channels=2, rate=8000))
    assert (result["channels"], result["sample_rate"], result["duration_s"]) == (2, 8000, 8.0)
    assert result["snr_db"] == pytest.approx(20, abs=1.0)


def test_one_channel_of_silence_halves_the_level_but_not_the_snr() -> None:
    left = bursts(20)
    frames = np.stack([left, np.zeros_like(left)], axis=1)
    result = analyze_audio(riff(fmt_chunk(1, 2, RATE, 16), pcm(frames, 2)))
    assert result["snr_db"] == pytest.approx(20, abs=1.0)


def test_extensible_pcm_as_written_for_24_bit_is_accepted() -> None:
    result = analyze_audio(riff(extensible_fmt(1, RATE, 24, subformat=1), pcm(bursts(20), 3)))
    assert result["snr_db"] == pytest.approx(20, abs=1.0)


def test_hop_sets_the_frame_length_and_a_short_tail_is_a_frame() -> None:
    assert analyze_audio(wav(bursts(20)), hop_ms=20)["frames"] == 200
    assert analyze_audio(wav(bursts(20, seconds=1.005)))["frames"] == 101


def test_digital_silence_has_no_speech_and_no_snr() -> None:
    result = analyze_audio(wav(np.zeros(RATE)))
    assert (result["speech_frames"], result["speech_ratio"], result["snr_db"], result["segments"]) == (0, 0.0, None, [])


def test_bursts_in_digital_silence_are_speech_with_no_measurable_noise() -> None:
    clean = bursts(200)  # noise far below one 16-bit step: the gaps quantise to exact zeros
    result = analyze_audio(wav(clean))
    assert result["speech_ratio"] == pytest.approx(0.5, abs=0.1)
    assert result["snr_db"] is None


def test_the_threshold_decides_what_counts_as_speech() -> None:
    assert analyze_audio(wav(bursts(10)), threshold_db=30)["speech_frames"] == 0


def test_is_deterministic() -> None:
    data = wav(bursts(15))
    assert analyze_audio(data) == analyze_audio(data)


TONE = pcm(bursts(20, seconds=1.0), 2)
FLOAT32 = riff(fmt_chunk(3, 1, RATE, 32), np.zeros(100, "<f4").tobytes())


@pytest.mark.parametrize(
    ("data", "code", "message"),
    [
        (b"", "empty_input", "empty"),
        (wav(np.zeros(0)), "empty_input", "no audio frames"),
        (b"\x00garbage bytes, not audio" * 4, "not_pcm_wav", "RIFF"),
        (FLOAT32, "not_pcm_wav", "unknown format: 3"),
        (riff(extensible_fmt(1, RATE, 32, subformat=3), TONE), "not_pcm_wav", "65534"),  # extensible float
        (riff(fmt_chunk(1, 1, RATE, 64), TONE), "not_pcm_wav", "64-bit"),
        (wav(bursts(20, seconds=1.0))[:-1000], "corrupt_wav", "truncated"),
        (riff(fmt_chunk(1, 1, RATE, 16), TONE[:-2000], data_size=len(TONE)), "corrupt_wav", "truncated"),
        (riff(fmt_chunk(1, 1, RATE, 16), TONE, data_size=2**32 - 1), "corrupt_wav", "lying header"),
        (riff(fmt_chunk(1, 0, RATE, 16), TONE), "corrupt_wav", "channels"),
        (riff(fmt_chunk(1, 1, 0, 16), TONE), "corrupt_wav", "0 Hz"),
        (b"RIFF\x04\x00\x00\x00WAVE", "corrupt_wav", "missing"),
        (b"RIFF\x20\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00", "corrupt_wav", "cut short"),
    ],
    ids=[
        "empty", "zero-frames", "garbage", "ieee-float", "extensible-float", "64-bit", "cut-file",
        "short-data-chunk", "streaming-size", "no-channels", "no-rate", "no-chunks", "cut-fmt",
    ],
)
def test_bad_files_fail_with_a_code_and_a_reason(data: bytes, code: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        analyze_audio(data)
    assert caught.value.code == code


def test_long_audio_is_refused_from_the_header() -> None:
    with pytest.raises(InvalidInput, match="4.0s, over the limit of 3s") as caught:
        analyze_audio(wav(bursts(20)), max_seconds=3)
    assert caught.value.code == "audio_too_long"


@pytest.mark.parametrize(
    "params",
    [
        {"hop_ms": 0},
        {"hop_ms": -10},
        {"hop_ms": 1000.5},
        {"hop_ms": float("nan")},
        {"hop_ms": "10"},
        {"threshold_db": -1},
        {"threshold_db": 61},
        {"threshold_db": None},
        {"max_seconds": 0},
    ],
    ids=lambda params: "-".join(f"{k}={v}" for k, v in params.items()),
)
def test_bad_parameters_are_refused(params: dict[str, object]) -> None:
    with pytest.raises(InvalidInput, match=next(iter(params))) as caught:
        analyze_audio(wav(bursts(20, seconds=1.0)), **params)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_parameter"


def test_the_extremes_of_the_parameter_ranges_are_allowed() -> None:
    data = wav(bursts(20, seconds=2.0))
    assert analyze_audio(data, hop_ms=1000, threshold_db=0)["frames"] == 2
    assert analyze_audio(data, hop_ms=0.01, threshold_db=60)["frames"] == 2 * RATE  # one sample per frame


def test_the_synthesis_has_the_snr_it_claims() -> None:
    # Guards the test data itself: noise power measured in the gaps against the burst power.
    x = bursts(20, seed=11)
    t = np.arange(x.size) / RATE
    on = np.floor(t / 0.5) % 2 == 1
    noise = np.mean(x[~on] ** 2)
    assert 10 * np.log10((np.mean(x[on] ** 2) - noise) / noise) == pytest.approx(20, abs=0.3)
    assert struct.unpack("<h", pcm(np.array([-1.0]), 2)) == (-32768,)
