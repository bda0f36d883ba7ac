"""The work a request may cost is bounded by documented 422 codes, checked before the costly part.

``too_many_frames`` (analysis frames), ``image_too_large`` (decoded pixels)
and ``output_too_large`` (the answer's JSON), on the kernels both stacks call.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import workloads
from tests.synth import encode, wav
from workloads import InvalidInput
from workloads._checks import MAX_OUTPUT_BYTES
from workloads.audio import MAX_FRAMES
from workloads.images import DEFAULT_MAX_PIXELS


def silence(rate: int, samples: int) -> bytes:
    return wav(np.zeros(samples), rate=rate)


def test_a_tiny_hop_on_a_fast_rate_is_refused_by_its_frame_count_before_decoding() -> None:
    data = silence(768_000, 384_000)  # half a second at 768 kHz; a hop of 1e-6 ms is one sample
    with pytest.raises(InvalidInput) as caught:
        workloads.analyze_audio(data, hop_ms=0.000001)
    assert caught.value.code == "too_many_frames"
    assert "384000 analysis frames, over the limit of 100000" in caught.value.message
    least = float(caught.value.message.rsplit(" ", 1)[1])  # the hop the message suggests fits the limit
    assert workloads.analyze_audio(data, hop_ms=least)["frames"] <= MAX_FRAMES


def test_the_frame_limit_is_inclusive() -> None:
    data = silence(16_000, 16_000)
    assert workloads.analyze_audio(data, hop_ms=10, max_frames=100)["frames"] == 100
    with pytest.raises(InvalidInput, match="101 analysis frames") as caught:
        workloads.analyze_audio(silence(16_000, 16_001), hop_ms=10, max_frames=100)
    assert caught.value.code == "too_many_frames"


def test_an_answer_over_the_output_limit_is_refused() -> None:
    rate, hop = 16_000, 16  # 1 ms frames, speech every other frame: a segment per two frames
    loud = np.tile(np.concatenate([np.full(hop, 0.5), np.zeros(hop)]), 150_000)
    with pytest.raises(InvalidInput) as caught:
        workloads.analyze_audio(wav(loud, rate=rate), hop_ms=1, max_frames=300_000)
    assert caught.value.code == "output_too_large"
    assert "150000 speech segments" in caught.value.message and str(MAX_OUTPUT_BYTES) in caught.value.message
    small = workloads.analyze_audio(wav(loud[: 2 * hop * 1000], rate=rate), hop_ms=1)
    assert len(small["segments"]) == 1000 and len(json.dumps(small)) < MAX_OUTPUT_BYTES


def test_domains_past_the_output_limit_are_refused_and_the_estimate_never_undercounts() -> None:
    many = [f"d{i}.example.com" for i in range(70_000)]
    with pytest.raises(InvalidInput) as caught:
        workloads.merge_domains([many])
    assert caught.value.code == "output_too_large" and "70000 distinct domains" in caught.value.message
    fits = many[:50_000]
    result = workloads.merge_domains([fits, fits])
    assert result["count"] == 100_000 and len(json.dumps(result, separators=(",", ":"))) <= MAX_OUTPUT_BYTES


def test_an_image_over_the_pixel_limit_is_refused_before_it_is_decoded() -> None:
    white = encode(Image.new("RGB", (6000, 6600), "white"))  # 39.6 MP in ~130 KB: took a worker to 1.5 GB
    assert 6000 * 6600 > DEFAULT_MAX_PIXELS
    for kernel in (workloads.detect_faces, workloads.read_text):
        with pytest.raises(InvalidInput) as caught:
            kernel(white)
        assert caught.value.code == "image_too_large"
        assert f"over the limit of {DEFAULT_MAX_PIXELS}" in caught.value.message
