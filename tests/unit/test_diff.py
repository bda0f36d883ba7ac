"""The diff engine shared by shadow mode and the parity tests: what counts as a difference, and the report."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from bridge.parity import Difference, DiffRules, Exchange, diff

JSON = {"content-type": "application/json"}


def js(value: Any, status: int = 200, headers: dict[str, str] | None = None, **dumps: Any) -> Exchange:
    return Exchange(status, JSON if headers is None else headers, json.dumps(value, **dumps).encode())


def lines(legacy: Exchange, modern: Exchange, rules: DiffRules | None = None) -> list[str]:
    result = diff(legacy, modern, rules) if rules is not None else diff(legacy, modern)
    return result.to_text().splitlines() if not result.equal else []


# --- JSON ------------------------------------------------------------------------


def test_equal_json_with_different_key_order_and_spacing() -> None:
    legacy = Exchange(200, JSON, b'{"width": 640, "height": 480, "faces": [[1, 2, 3, 4]]}')
    modern = Exchange(200, JSON, b'{"faces":[[1,2,3,4]],"height":480,"width":640}')
    result = diff(legacy, modern)
    assert result.equal
    assert result.differences == [] and not result.truncated
    assert result.to_text() == "no differences"


def test_the_report_format() -> None:
    legacy = js({"faces": [[1, 2, 93, 4]], "error": {"code": "x", "message": "m"}}, status=200)
    modern = js({"faces": [[1, 2, 94, 4]], "error": {"message": "m"}, "hint": "new"}, status=422)
    result = diff(legacy, modern)
    assert not result.equal
    assert result.to_text() == (
        "status: legacy 200, modern 422\n"
        "body.faces[0][2]: legacy 93, modern 94\n"
        "body.error.code: missing in modern\n"
        "body.hint: missing in legacy"
    )
    assert result.differences == [
        Difference("status", "200", "422", "status"),
        Difference("body.faces[0][2]", "93", "94", "value"),
        Difference("body.error.code", '"x"', None, "missing"),
        Difference("body.hint", None, '"new"', "extra"),
    ]


def test_to_dict_is_json_for_storage() -> None:
    result = diff(js({"a": 1}), js({"a": 2}, status=500))
    data = result.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data == {
        "equal": False,
        "truncated": False,
        "differences": [
            {"path": "status", "kind": "status", "legacy": "200", "modern": "500"},
            {"path": "body.a", "kind": "value", "legacy": "1", "modern": "2"},
        ],
    }


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1.0, 1.0 + 1e-6, True),  # relative edge: tolerance x max(1, |a|, |b|)
        (1.0, 1.0 + 1.1e-6, False),
        (0.0, 1e-6, True),  # absolute near zero
        (0.0, 1.5e-6, False),
        (1e-9, -1e-9, True),
        (1e6, 1e6 + 1.0, True),  # relative for big numbers: 1e6 x 1e-6 = 1
        (1e6, 1e6 + 1.5, False),
        (-1e6, -1e6 - 1.0, True),
        (93, 93.0, True),  # int against float: within tolerance
        (93, 93.0000001, True),
        (93, 93.5, False),
        (10**18, 10**18 + 1, False),  # two ints: exact, they are ids and counts
        (float("inf"), float("inf"), True),
        (float("inf"), 1e308, False),
        (float("-inf"), float("inf"), False),
        (float("nan"), float("nan"), True),
        (float("nan"), 0.0, False),
    ],
)
def test_float_tolerance_edges(a: float, b: float, equal: bool) -> None:
    assert diff(js({"x": a}), js({"x": b})).equal is equal
    assert diff(js({"x": b}), js({"x": a})).equal is equal  # symmetric


def test_tolerance_is_a_rule() -> None:
    assert not diff(js([0.5]), js([0.51])).equal
    assert diff(js([0.5]), js([0.51]), DiffRules(float_tolerance=0.02)).equal
    assert not diff(js([0.5]), js([0.5 + 1e-12]), DiffRules(float_tolerance=0)).equal


def test_bool_is_never_a_number() -> None:
    assert lines(js({"ok": True}), js({"ok": 1})) == ["body.ok: legacy true (boolean), modern 1 (number)"]
    assert lines(js({"ok": False}), js({"ok": 0.0})) == ["body.ok: legacy false (boolean), modern 0.0 (number)"]
    assert diff(js({"ok": True}), js({"ok": True})).differences == []
    assert diff(js([True]), js([False])).differences == [Difference("body[0]", "true", "false", "value")]


def test_type_differences() -> None:
    assert lines(js({"r": None}), js({"r": {}})) == ["body.r: legacy null (null), modern {} (object)"]
    assert lines(js({"r": "1"}), js({"r": 1})) == ['body.r: legacy "1" (string), modern 1 (number)']
    assert lines(js([1]), js({"0": 1})) == ["body: legacy [1] (array), modern {\"0\": 1} (object)"]
    assert diff(js({"r": [1]}), js({"r": "x"})).differences[0].kind == "type"


def test_nested_list_length_mismatch_then_the_common_items() -> None:
    legacy = js({"faces": [[1, 2, 3, 4], [5, 6, 7, 8]]})
    modern = js({"faces": [[1, 2, 3, 4], [5, 6, 7]]})
    assert lines(legacy, modern) == ["body.faces[1]: length legacy 4, modern 3"]
    assert diff(legacy, modern).differences[0].kind == "length"
    # a shorter outer list: the length, then the items both sides have
    assert lines(js({"lines": [{"t": "a"}, {"t": "b"}]}), js({"lines": [{"t": "A"}]})) == [
        "body.lines: length legacy 2, modern 1",
        'body.lines[0].t: legacy "a", modern "A"',
    ]


def test_odd_keys_are_quoted_in_paths() -> None:
    assert lines(js({"a.b": 1, "": 2}), js({"a.b": 3, "": 4})) == [
        'body["a.b"]: legacy 1, modern 3',
        'body[""]: legacy 2, modern 4',
    ]


# --- ignore paths --------------------------------------------------------------


JOB_A = {"job_id": "a1", "kind": "ocr", "created_at": "2024-01-01T00:00:00Z", "result": {"created_at": 1, "n": 2}}
JOB_B = {"job_id": "b2", "kind": "ocr", "created_at": "2024-06-01T00:00:00Z", "result": {"created_at": 9, "n": 2}}


def test_ignore_exact_path() -> None:
    assert [d.path for d in diff(js(JOB_A), js(JOB_B)).differences] == [
        "body.job_id",
        "body.created_at",
        "body.result.created_at",
    ]
    rules = DiffRules(ignore=("job_id", "created_at"))
    assert [d.path for d in diff(js(JOB_A), js(JOB_B), rules).differences] == ["body.result.created_at"]


def test_star_is_one_key_and_double_star_any_depth() -> None:
    one_down = DiffRules(ignore=("job_id", "*.created_at"))
    assert [d.path for d in diff(js(JOB_A), js(JOB_B), one_down).differences] == ["body.created_at"]
    anywhere = DiffRules(ignore=("job_id", "**.created_at"))
    assert diff(js(JOB_A), js(JOB_B), anywhere).equal
    # * never stands for a list index
    listing = {"jobs": [{"created_at": 1}]}
    assert not diff(js(listing), js({"jobs": [{"created_at": 2}]}), DiffRules(ignore=("*.created_at",))).equal
    assert diff(js(listing), js({"jobs": [{"created_at": 2}]}), DiffRules(ignore=("jobs[].created_at",))).equal
    assert diff(js(listing), js({"jobs": [{"created_at": 2}]}), DiffRules(ignore=("**.created_at",))).equal
    assert not diff(js([{"created_at": 1}]), js([{"created_at": 2}]), DiffRules(ignore=("*.created_at",))).equal
    assert diff(js([{"created_at": 1}]), js([{"created_at": 2}]), DiffRules(ignore=("[].created_at",))).equal
    # and [] never stands for a key
    assert not diff(js({"a": {"b": 1}}), js({"a": {"b": 2}}), DiffRules(ignore=("a[]",))).equal


def test_ignore_list_indexes() -> None:
    legacy = js({"lines": [{"text": "a", "score": 0.9}, {"text": "b", "score": 0.8}]})
    modern = js({"lines": [{"text": "a", "score": 0.7}, {"text": "B", "score": 0.6}]})
    assert diff(legacy, modern, DiffRules(ignore=("lines[].score",))).to_text() == 'body.lines[1].text: legacy "b", modern "B"'
    assert [d.path for d in diff(legacy, modern, DiffRules(ignore=("lines[0].score",))).differences] == [
        "body.lines[1].text",
        "body.lines[1].score",
    ]
    assert diff(js([[1, 2], [3, 4]]), js([[1, 0], [3, 0]]), DiffRules(ignore=("[][1]",))).equal


def test_ignored_subtree_and_missing_keys() -> None:
    legacy = js({"service": "x", "pool": {"workers": 2, "busy": 1}})
    modern = js({"service": "x", "pool": {"workers": 3}})
    assert diff(legacy, modern, DiffRules(ignore=("pool",))).equal
    # ignore: the value may differ, the key must be there; skip: left out altogether
    assert lines(js({"a": 1, "pool": {}}), js({"a": 1}), DiffRules(ignore=("pool",))) == ["body.pool: missing in modern"]
    assert lines(js({"a": 1}), js({"a": 1, "pool": {}}), DiffRules(ignore=("pool",))) == ["body.pool: missing in legacy"]
    assert diff(js({"a": 1, "pool": {}}), js({"a": 1}), DiffRules(skip=("pool",))).equal
    assert diff(js({"a": 1}), js({"a": 1, "pool": {}}), DiffRules(skip=("pool",))).equal
    assert diff(legacy, modern, DiffRules(skip=("pool",))).equal
    assert diff(js({"error": {"code": "c", "message": "x"}}), js({"error": {"code": "c", "message": "y"}}),
                DiffRules(ignore=("error.message",))).equal
    # an ignore path never hides a sibling, a parent or another branch
    assert not diff(js({"error": {"code": "c"}}), js({"error": {"code": "d"}}), DiffRules(ignore=("error.message",))).equal
    assert not diff(js({"pool2": 1}), js({"pool2": 2}), DiffRules(ignore=("pool",))).equal


@pytest.mark.parametrize("bad", ["", "a..b", "a.", ".a", "a[x]", "a.[]", "created_*", "a[1"])
def test_malformed_ignore_paths_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="ignore path"):
        DiffRules(ignore=(bad,))


def test_rules_refuse_a_bare_string() -> None:
    with pytest.raises(TypeError, match="not one string"):
        DiffRules(headers="content-type")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not one string"):
        DiffRules(ignore="job_id")  # type: ignore[arg-type]


# --- status and headers ---------------------------------------------------------


def test_status_difference_alone() -> None:
    result = diff(Exchange(404, {}, b""), Exchange(405, {}, b""))
    assert result.differences == [Difference("status", "404", "405", "status")]


def test_content_type_compares_the_media_type_only() -> None:
    plain = Exchange(200, {"Content-Type": "application/json"}, b"{}")
    charset = Exchange(200, {"content-type": "Application/JSON; charset=utf-8"}, b"{}")
    assert diff(plain, charset).equal
    html = Exchange(200, {"content-type": "text/html; charset=utf-8"}, b"{}")
    assert lines(plain, html) == ["headers.content-type: legacy application/json, modern text/html; charset=utf-8"]
    assert lines(plain, Exchange(200, {}, b"{}")) == ["headers.content-type: legacy application/json, modern absent"]


def test_only_the_selected_headers_count() -> None:
    legacy = Exchange(202, {"content-type": "application/json", "location": "/v1/jobs/1", "date": "Mon"}, b"{}")
    modern = Exchange(202, {"content-type": "application/json", "Location": "/v1/jobs/2", "Date": "Tue"}, b"{}")
    assert [d.path for d in diff(legacy, modern).differences] == ["headers.location"]  # compared by default; date never
    assert diff(legacy, modern, DiffRules(headers=("content-type",))).equal
    rules = DiffRules(headers=("Content-Type", "Location", "Retry-After"))
    assert diff(legacy, modern, rules).differences == [
        Difference("headers.location", "/v1/jobs/1", "/v1/jobs/2", "header"),
    ]
    assert Exchange(200, {"X-A": "1"}).headers == {"x-a": "1"}


def test_headers_compare_by_rule() -> None:
    def answer(**headers: str) -> Exchange:
        return Exchange(405, {"content-type": "application/json", **headers}, b"{}")

    # Location as a path, Allow as a set, Retry-After exactly, by default
    assert diff(answer(location="/v1/jobs/1"), answer(location="http://127.0.0.1:8000/v1/jobs/1")).equal
    assert lines(answer(location="/v1/jobs/1"), answer(location="/v1/jobs/1/")) == [
        "headers.location: legacy /v1/jobs/1, modern /v1/jobs/1/"]
    assert diff(answer(allow="GET, DELETE"), answer(allow="delete,GET")).equal
    assert lines(answer(allow="GET, DELETE"), answer(allow="GET")) == ["headers.allow: legacy GET, DELETE, modern GET"]
    assert lines(answer(**{"retry-after": "1"}), answer(**{"retry-after": "5"})) == [
        "headers.retry-after: legacy 1, modern 5"]
    assert lines(answer(**{"retry-after": "1"}), answer()) == ["headers.retry-after: legacy 1, modern absent"]
    # a route may say how: present only, or exactly
    present = DiffRules(headers=("x-request-id",), header_rules={"X-Request-Id": "present"})
    assert diff(answer(**{"x-request-id": "a"}), answer(**{"x-request-id": "b"}), present).equal
    assert not diff(answer(**{"x-request-id": "a"}), answer(), present).equal
    exact = DiffRules(header_rules={"location": "exact"})
    assert not diff(answer(location="/a"), answer(location="http://h/a"), exact).equal
    with pytest.raises(ValueError, match="header rule"):
        DiffRules(header_rules={"allow": "sorted"})


def test_aliases_read_modern_ids_as_legacy_ones() -> None:
    legacy = Exchange(202, {"content-type": "application/json", "location": "/v1/jobs/L1"},
                      json.dumps({"job_id": "L1", "error": {"message": "no job 'L1'"}}).encode())
    modern = Exchange(202, {"content-type": "application/json", "location": "/v1/jobs/M9"},
                      json.dumps({"job_id": "M9", "error": {"message": "no job 'M9'"}}).encode())
    assert len(diff(legacy, modern).differences) == 3
    assert diff(legacy, modern, aliases={"M9": "L1"}).equal
    text = Exchange(200, {"content-type": "text/plain"}, b"job M9")
    assert diff(Exchange(200, {"content-type": "text/plain"}, b"job L1"), text, aliases={"M9": "L1"}).equal


# --- bodies that are not JSON ------------------------------------------------------


def test_binary_bodies_by_digest() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    same = diff(Exchange(200, {"content-type": "image/png"}, png), Exchange(200, {"content-type": "image/png"}, png))
    assert same.equal
    other = png[:-1] + b"\x00"
    result = diff(Exchange(200, {"content-type": "image/png"}, png), Exchange(200, {"content-type": "image/png"}, other))
    legacy_digest = hashlib.sha256(png).hexdigest()
    modern_digest = hashlib.sha256(other).hexdigest()
    assert result.differences == [
        Difference("body", f"264 bytes, sha256 {legacy_digest}", f"264 bytes, sha256 {modern_digest}", "digest")
    ]
    assert result.to_text() == f"body: legacy 264 bytes, sha256 {legacy_digest}, modern 264 bytes, sha256 {modern_digest}"


def test_non_json_text_is_compared_byte_for_byte() -> None:
    page = {"content-type": "text/plain"}
    assert diff(Exchange(200, page, b"hello"), Exchange(200, page, b"hello")).equal
    result = diff(Exchange(200, page, b"hello"), Exchange(200, page, b"hello "))
    assert [(d.kind, d.legacy.split(",")[0], d.modern.split(",")[0]) for d in result.differences] == [  # type: ignore[union-attr]
        ("digest", "5 bytes", "6 bytes")
    ]
    assert diff(Exchange(204, {}, b""), Exchange(204, {}, b"")).equal


def test_json_against_an_error_page_is_a_body_difference() -> None:
    result = diff(js({"a": 1}), Exchange(200, {"content-type": "application/json"}, b"<html>oops</html>"))
    assert [d.kind for d in result.differences] == ["digest"]


def test_parseable_json_counts_as_json_whatever_the_content_type() -> None:
    # Compared as data (so whitespace does not count); the content-type difference is still reported.
    legacy = Exchange(200, {"content-type": "text/plain"}, b'{"a": 1.0}')
    modern = Exchange(200, {"content-type": "application/json"}, b'{"a":1}')
    assert [d.kind for d in diff(legacy, modern).differences] == ["header"]


# --- limits ----------------------------------------------------------------------


def test_values_are_truncated_in_the_report() -> None:
    long_a, long_b = "a" * 500, "b" * 500
    result = diff(js({"t": long_a}), js({"t": long_b}))
    d = result.differences[0]
    assert len(d.legacy) == 200 and d.legacy == json.dumps(long_a)[:197] + "..."  # type: ignore[arg-type]
    assert len(d.modern) == 200  # type: ignore[arg-type]
    short = diff(js({"t": long_a}), js({"t": long_b}), DiffRules(max_value_chars=20)).differences[0]
    assert short.legacy == '"aaaaaaaaaaaaaaaa...'
    # a type difference keeps its type visible
    typed = diff(js({"t": long_a}), js({"t": 1}), DiffRules(max_value_chars=40)).differences[0]
    assert len(typed.legacy) == 40 and typed.legacy.endswith('... (string)')  # type: ignore[union-attr]
    # header values are cut too
    huge = Exchange(200, {"content-type": "x/" + "y" * 1000}, b"")
    assert len(diff(huge, Exchange(200, {}, b"")).differences[0].legacy) == 200  # type: ignore[arg-type]


def test_stops_at_max_differences() -> None:
    legacy = js({f"k{i}": i for i in range(50)})
    modern = js({f"k{i}": -i - 1 for i in range(50)}, status=500)
    result = diff(legacy, modern)
    assert len(result.differences) == 20 and result.truncated
    assert result.differences[0].kind == "status"
    assert result.to_text().splitlines()[-1] == "... stopped after 20 differences"
    exact = diff(js([1, 2, 3]), js([0, 0, 0]), DiffRules(max_differences=3))
    assert len(exact.differences) == 3 and not exact.truncated  # exactly at the limit: nothing left out
    assert diff(js([1, 2, 3, 4]), js([0, 0, 0, 0]), DiffRules(max_differences=3)).truncated


def test_rules_validate() -> None:
    with pytest.raises(ValueError, match="max_differences"):
        DiffRules(max_differences=0)
    with pytest.raises(ValueError, match="float_tolerance"):
        DiffRules(float_tolerance=-1)
    with pytest.raises(ValueError, match="float_tolerance"):
        DiffRules(float_tolerance=float("nan"))
    with pytest.raises(TypeError, match="bytes"):
        Exchange(200, {}, "text")  # type: ignore[arg-type]

