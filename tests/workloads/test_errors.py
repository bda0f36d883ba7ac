"""InvalidInput is the kernels' only error for bad input, and it survives the trip between processes."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import workloads
from tests.synth import png_header_only, wav
from workloads import InvalidInput

# One real failure per code, raised by the kernels themselves.
FAILURES: list[tuple[str, Callable[[], Any]]] = [
    ("empty_input", lambda: workloads.detect_faces(b"")),
    ("undecodable_image", lambda: workloads.read_text(b"not an image")),
    ("image_too_large", lambda: workloads.decode_image(png_header_only(100_000, 100_000))),
    ("invalid_parameter", lambda: workloads.detect_faces(b"x", scale_factor=1.0)),
    ("not_pcm_wav", lambda: workloads.analyze_audio(b"garbage, not a wav")),
    ("corrupt_wav", lambda: workloads.analyze_audio(wav(np.zeros(100))[:-10])),
    ("audio_too_long", lambda: workloads.analyze_audio(wav(np.zeros(16_000)), max_seconds=0.5)),
    ("text_too_large", lambda: workloads.extract_domains("a.com " * 10, max_chars=20)),
]


@pytest.mark.parametrize(("code", "fail"), FAILURES, ids=[code for code, _ in FAILURES])
def test_each_error_round_trips_through_pickle_with_code_and_message(code: str, fail: Callable[[], Any]) -> None:
    with pytest.raises(InvalidInput) as caught:
        fail()
    error = caught.value
    assert error.code == code
    assert str(error) == error.message and error.message
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        copy = pickle.loads(pickle.dumps(error, protocol=protocol))
        assert type(copy) is InvalidInput
        assert (copy.code, copy.message, str(copy), copy.args) == (code, error.message, error.message, error.args)
    assert error.as_dict() == {"code": code, "message": error.message}


def test_it_is_a_value_error_so_generic_handlers_still_see_bad_input() -> None:
    error = InvalidInput("empty_input", "the input is empty")
    assert isinstance(error, ValueError)
    assert repr(error) == "InvalidInput('empty_input', 'the input is empty')"

