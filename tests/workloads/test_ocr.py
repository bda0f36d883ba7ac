"""OCR on text rendered in the test: recognised words, reading order, one engine per process."""

from __future__ import annotations

import numpy as np
import pytest

from tests.synth import assert_plain, encode, render
from workloads import InvalidInput, engine_loads, read_text
from workloads.ocr import reading_order


def texts(result: dict[str, object]) -> list[str]:
    return [" ".join(line["text"].upper().split()) for line in result["lines"]]  # type: ignore[attr-defined, index]


def test_two_lines_are_read_in_order() -> None:
    result = read_text(render((640, 240), (30, 40, "HELLO WORLD"), (30, 140, "CUTOVER 2026")))
    assert_plain(result)
    assert (result["width"], result["height"]) == (640, 240)
    assert texts(result) == ["HELLO WORLD", "CUTOVER 2026"]
    for line in result["lines"]:
        assert 0.5 <= line["score"] <= 1 and line["score"] == round(line["score"], 4)
        assert len(line["box"]) == 4
        assert all(0 <= x <= 640 and 0 <= y <= 240 for x, y in line["box"])
    top, bottom = result["lines"]
    assert max(y for _, y in top["box"]) < min(y for _, y in bottom["box"])


def test_words_on_one_row_stay_together_even_when_askew() -> None:
    # RIGHT sits 16 px higher than LEFT: RapidOCR's own order (top edges within 10 px) puts it first.
    result = read_text(render((800, 300), (30, 60, "LEFT"), (500, 44, "RIGHT"), (30, 180, "BELOW")))
    assert texts(result) == ["LEFT", "RIGHT", "BELOW"]


def test_a_blank_image_has_no_lines() -> None:
    assert read_text(encode(np.full((200, 300, 3), 255, np.uint8))) == {"width": 300, "height": 200, "lines": []}


def test_the_engine_is_built_once_per_process() -> None:
    words, blank = render((400, 120), (20, 30, "ONCE")), encode(np.full((50, 50), 255, np.uint8))
    assert texts(read_text(words)) == ["ONCE"]
    for _ in range(3):
        assert read_text(blank)["lines"] == []
    assert engine_loads() == 1


@pytest.mark.parametrize(("data", "code"), [(b"", "empty_input"), (b"\x89PNG\r\n\x1a\n", "undecodable_image")])
def test_bad_images_are_refused(data: bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        read_text(data)
    assert caught.value.code == code


def line(text: str, x: float, top: float, height: float = 40) -> dict[str, object]:
    box = [[x, top], [x + 100, top], [x + 100, top + height], [x, top + height]]
    return {"text": text, "box": box, "score": 0.9}


def test_reading_order_groups_rows_by_vertical_centre() -> None:
    scrambled = [
        line("c", 300, 8),
        line("d", 10, 100),
        line("a", 10, 0),
        line("e", 200, 110),  # centre 10 px below d's: half a line height is 20 px, same row
        line("b", 150, 15),
        line("f", 10, 150),  # centre 50 px below d's row: a new row
    ]
    assert [item["text"] for item in reading_order(scrambled)] == ["a", "b", "c", "d", "e", "f"]
    assert reading_order([]) == []
