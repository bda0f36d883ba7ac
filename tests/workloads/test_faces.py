"""Face detection on scikit-image's astronaut photo (Eileen Collins, face in the upper middle)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data as samples

from tests.synth import assert_plain, encode
from workloads import InvalidInput, detect_faces

ASTRONAUT = samples.astronaut()  # 512 x 512 RGB


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_the_astronauts_face_is_found_where_it_is(fmt: str) -> None:
    result = detect_faces(encode(ASTRONAUT, fmt))
    assert_plain(result)
    assert (result["width"], result["height"]) == (512, 512)
    assert len(result["faces"]) >= 1
    x, y, w, h = result["faces"][0]
    assert 150 <= x + w / 2 <= 350 and 50 <= y + h / 2 <= 250
    assert 60 <= w <= 200 and w == h


def test_results_are_deterministic_and_gray_input_works() -> None:
    png = encode(ASTRONAUT)
    assert detect_faces(png) == detect_faces(png)
    gray = detect_faces(encode(ASTRONAUT.mean(axis=2).astype(np.uint8)))
    assert len(gray["faces"]) == 1


def test_several_faces_come_sorted_by_y_then_x() -> None:
    tiled = np.tile(ASTRONAUT, (2, 2, 1))  # one face per 512 x 512 quadrant
    faces = detect_faces(encode(tiled))["faces"]
    assert len(faces) == 4
    assert faces == sorted(faces, key=lambda box: (box[1], box[0]))
    quadrants = [((x + w / 2) // 512, (y + h / 2) // 512) for x, y, w, h in faces]
    assert quadrants == [(0, 0), (1, 0), (0, 1), (1, 1)]


def test_parameters_reach_the_detector() -> None:
    png = encode(ASTRONAUT)
    assert detect_faces(png, min_size=150)["faces"] == []  # the face is about 95 px wide
    assert len(detect_faces(png, scale_factor=1.3, min_neighbors=3)["faces"]) >= 1


def test_a_blank_image_has_no_faces() -> None:
    assert detect_faces(encode(np.full((200, 300, 3), 255, np.uint8))) == {"width": 300, "height": 200, "faces": []}


@pytest.mark.parametrize(
    "params",
    [
        {"scale_factor": 1.0},
        {"scale_factor": 0.5},
        {"scale_factor": float("nan")},
        {"scale_factor": "1.1"},
        {"min_neighbors": -1},
        {"min_neighbors": 2.5},
        {"min_neighbors": True},
        {"min_size": 0},
        {"max_pixels": -5},
    ],
    ids=lambda params: "-".join(f"{k}={v}" for k, v in params.items()),
)
def test_bad_parameters_are_refused(params: dict[str, object]) -> None:
    with pytest.raises(InvalidInput, match=next(iter(params))) as caught:
        detect_faces(encode(ASTRONAUT), **params)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_parameter"


@pytest.mark.parametrize(("data", "code"), [(b"", "empty_input"), (b"GIF89a garbage", "undecodable_image")])
def test_bad_images_are_refused(data: bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        detect_faces(data)
    assert caught.value.code == code
