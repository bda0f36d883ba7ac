"""The cutover plan: the shipped file, every validation error and its line, matching, changes."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import PlanError
from bridge.host import Plan, Route

ROOT = Path(__file__).resolve().parents[2]

# What the two apps serve (the host derives this from them; README's contract table).
KNOWN_ROUTES = [
    ("GET", "/status"),
    ("POST", "/v1/faces"),
    ("POST", "/v1/ocr"),
    ("POST", "/v1/audio/analyze"),
    ("POST", "/v1/domains"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/{id}"),
    ("DELETE", "/v1/jobs/{id}"),
]
KNOWN_TASKS = ["data_sync"]


def parse(text: str) -> Plan:
    return Plan.parse(text, "cutover.toml", known_routes=KNOWN_ROUTES, known_tasks=KNOWN_TASKS, modern_routes=KNOWN_ROUTES)


def error(text: str) -> PlanError:
    with pytest.raises(PlanError) as caught:
        parse(text)
    return caught.value


# --- the shipped plan ----------------------------------------------------------------


def test_shipped_plan_is_all_legacy_but_domains_on_shadow() -> None:
    plan = Plan.load(ROOT / "cutover.toml", known_routes=KNOWN_ROUTES, known_tasks=KNOWN_TASKS)
    assert plan.source == ROOT / "cutover.toml"
    assert {(r.method, r.template) for r in plan.routes} == {
        (m, t.replace("{id}", "{job_id}")) for m, t in KNOWN_ROUTES
    }
    modes = {r.key: r.mode for r in plan.routes}
    assert modes.pop("POST /v1/domains") == "shadow"
    assert set(modes.values()) == {"legacy"}
    assert plan.route_for("POST", "/v1/domains").mirrored  # type: ignore[union-attr]
    assert not plan.route_for("POST", "/v1/jobs").shadow_safe  # type: ignore[union-attr]
    assert plan.tasks == {"data_sync": "legacy"}
    assert plan.sticky_header is None


def test_the_example_from_the_brief() -> None:
    plan = Plan.parse(
        """
# comment
[routes]
"GET /status" = "shadow"
"POST /v1/faces" = 'legacy'
'POST /v1/ocr' = { mode = "canary", percent = 10 }
"POST /v1/jobs" = { mode = "shadow", shadow_safe = false }
"GET /v1/jobs/{job_id}" = "modern"
[canary]
sticky_header = "X-Cutover-Key"   # optional; else the client address is the key
[tasks]
data_sync = "legacy"
"""
    )
    assert plan.routes == (
        Route("GET", "/status", "shadow", 0.0, True),
        Route("POST", "/v1/faces", "legacy", 0.0, False),
        Route("POST", "/v1/ocr", "canary", 10.0, False),
        Route("POST", "/v1/jobs", "shadow", 0.0, False),
        Route("GET", "/v1/jobs/{job_id}", "modern", 0.0, True),
    )
    assert plan.sticky_header == "X-Cutover-Key"
    assert plan.source is None


def test_route_tables_in_their_own_section() -> None:
    plan = parse('[routes."POST /v1/ocr"]\nmode = "canary"\npercent = 12.5\n')
    assert plan.routes == (Route("POST", "/v1/ocr", "canary", 12.5),)


def test_empty_plan_keeps_everything_on_legacy() -> None:
    plan = parse("")
    assert plan.routes == () and plan.route_for("GET", "/status") is None
    assert plan.owner_of("data_sync") == "legacy"


# --- validation: the message names the file and the line -----------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[routes]\n"GET /status" = "legacy"\n"POST /v1/face" = "modern"\n',
            'cutover.toml:3: route "POST /v1/face" cannot be in modern mode: modern does not serve it '
            "(port it first, or keep it on legacy)",
        ),
        (
            '[routes]\n"GET /status" = "legacy"\n"POST /v1/face" = { mode = "legacy", ignore = "id" }\n',
            'cutover.toml:3: ignore must be an array of strings, got "id"',
        ),
        (
            '[routes]\n"GET /status" = { mode = "legacy", ignore_values = ["a..b"] }\n',
            "cutover.toml:2: ignore_values in route \"GET /status\": ignore path 'a..b': cannot read part '' "
            "(write a.b, *.b, a[].b or a[2].b)",
        ),
        (
            '[diff]\nheaders = ["content-type"]\nfloat_tolerance = -1\n',
            "cutover.toml:3: float_tolerance must be a number >= 0, got -1",
        ),
        (
            '[diff]\nignored = ["x"]\n',
            'cutover.toml:2: unknown diff rule "ignored" in [diff] (one of ignore, ignore_values, skip, float_tolerance, headers, header_rules)',
        ),
        (
            '[routes]\n\n"POST /v1/ocr" = { mode = "canary", percent = 150 }\n',
            "cutover.toml:3: canary percent must be between 0 and 100, got 150",
        ),
        (
            '[routes]\n"POST /v1/ocr" = { mode = "canary", percent = -0.5 }\n',
            "cutover.toml:2: canary percent must be between 0 and 100, got -0.5",
        ),
        (
            '[routes]\n"POST /v1/ocr" = { mode = "canary", percent = nan }\n',
            "cutover.toml:2: canary percent must be between 0 and 100, got nan",
        ),
        (
            '[routes]\n"POST /v1/ocr" = { mode = "canary", percent = true }\n',
            "cutover.toml:2: canary percent must be a number, got true",
        ),
        (
            '[routes]\n"POST /v1/ocr" = { mode = "canary", percent = "10" }\n',
            'cutover.toml:2: canary percent must be a number, got "10"',
        ),
        (
            '[routes]\n"POST /v1/ocr" = { mode = "shadow", percent = 10 }\n',
            "cutover.toml:2: percent applies to canary mode only, not to shadow (got 10)",
        ),
        (
            '[routes]\n"POST /v1/ocr" = "canary"\n',
            'cutover.toml:2: canary mode needs a percent: "POST /v1/ocr" = { mode = "canary", percent = 10 }',
        ),
        (
            '[routes]\n"POST /v1/ocr" = { mode = "canary" }\n',
            'cutover.toml:2: canary mode needs a percent: { mode = "canary", percent = 10 }',
        ),
        (
            "# a comment\n[routes]\n'GET /status' = \"canery\"\n",
            'cutover.toml:3: unknown mode "canery" (one of legacy, shadow, canary, modern)',
        ),
        (
            '[routes]\n"GET /status" = { shadow_safe = true }\n',
            'cutover.toml:2: route "GET /status" needs a mode (one of legacy, shadow, canary, modern)',
        ),
        (
            '[routes]\n"GET /status" = { mode = "shadow", shadow_safe = "yes" }\n',
            'cutover.toml:2: shadow_safe must be true or false, got "yes"',
        ),
        (
            '[routes]\n"GET /status" = { mode = "shadow", percnt = 3 }\n',
            'cutover.toml:2: unknown key "percnt" in route "GET /status" (one of mode, percent, shadow_safe, id_from, id_param, shadow_write, aa_sample, settle, ignore, ignore_values, skip, float_tolerance, headers, header_rules, auto, gates)',
        ),
        (
            '[routes]\n"GET /status" = 3\n',
            'cutover.toml:2: a route takes a mode ("legacy") or a table ({ mode = "canary", percent = 10 }), got 3',
        ),
        (
            '[routes]\n"FETCH /status" = "legacy"\n',
            'cutover.toml:2: unknown method "FETCH" (one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT)',
        ),
        (
            '[routes]\n"get /status" = "legacy"\n',
            'cutover.toml:2: unknown method "get" (one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT)',
        ),
        (
            '[routes]\n"GET status" = "legacy"\n',
            'cutover.toml:2: path template must start with "/", got "status"',
        ),
        (
            '[routes]\n"GET  /status" = "legacy"\n',
            'cutover.toml:2: a route is written "METHOD /path" with one space, got "GET  /status"',
        ),
        (
            '[routes]\n"GET /v1//jobs" = "legacy"\n',
            'cutover.toml:2: path template has an empty segment ("//"): "/v1//jobs"',
        ),
        (
            '[routes]\n"GET /v1/jobs/{id}.json" = "legacy"\n',
            'cutover.toml:2: a placeholder must be a whole segment such as {job_id}, got "{id}.json"',
        ),
        (
            '[routes]\n"GET /v1/jobs/{job_id}" = "legacy"\n"POST /v1/jobs" = "legacy"\n"GET /v1/jobs/{id}" = "modern"\n',
            'cutover.toml:4: duplicate route "GET /v1/jobs/{id}": same as "GET /v1/jobs/{job_id}" on line 2',
        ),
        (
            "[tasks]\ndata_sync = \"legacy\"\ndata_synk = 'modern'\n",
            'cutover.toml:3: unknown task "data_synk" (known: data_sync)',
        ),
        (
            '[routes]\n"GET /status" = "shadow"\n\n[tasks]\ndata_sync = "shadow"\n',
            'cutover.toml:5: task "data_sync": owner must be legacy or modern, got "shadow"',
        ),
        (
            "[routes]\n\n[route]\n",
            "cutover.toml:3: unknown table [route] (one of [routes], [canary], [tasks], [apps], [diff], [gates], [shadow])",
        ),
        (
            'routes = "legacy"\n',
            'cutover.toml:1: routes must be a table ([routes]), got "legacy"',
        ),
        (
            '[canary]\nsticky_header = "X Cutover"\n',
            'cutover.toml:2: sticky_header must be a header name such as "X-Cutover-Key", got "X Cutover"',
        ),
        (
            "[canary]\n\nsticky = 'X-Key'\n",
            'cutover.toml:3: unknown key "sticky" in [canary] (one of sticky_header)',
        ),
    ],
)
def test_errors_name_the_line(text: str, message: str) -> None:
    exc = error(text)
    assert str(exc) == message
    assert exc.source == Path("cutover.toml")
    assert exc.line == int(message.split(":")[1])
    assert isinstance(exc, ValueError)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('[routes]\n"GET /status" = "legacy"\n"GET /status" = "modern"\n', 3, "Cannot overwrite a value"),
        ('[routes]\n"GET /status" = "legacy\n', 2, "Illegal character"),
        ('[routes]\n"GET /status" = \n\n', 2, "Invalid value"),
        ('[routes\n', 1, "Expected ']'"),
        ('[routes]\n"GET /status" = ', 2, "Invalid value"),  # tomllib: "at end of document"
    ],
)
def test_toml_syntax_errors_keep_their_line(text: str, line: int, reason: str) -> None:
    exc = error(text)
    assert exc.line == line
    assert str(exc).startswith(f"cutover.toml:{line}: invalid TOML: {reason}")
    assert re.search(r" \((column \d+|at end of file)\)$", str(exc))
    assert isinstance(exc.__cause__, tomllib.TOMLDecodeError)


def test_error_points_at_the_field_line_in_a_route_section() -> None:
    text = '[routes]\n"GET /status" = "legacy"\n\n[routes."POST /v1/ocr"]\nmode = "canary"\npercent = 150\n'
    assert error(text).line == 6
    text = '[routes."POST /v1/ocr"]\n# why\nmode = "canery"\n'
    assert error(text).line == 3


def test_line_found_among_lookalikes() -> None:
    # The same route written in a comment and as a value elsewhere must not be taken for the key.
    text = (
        '# "POST /v1/face" = "modern" was a typo\n'
        "[routes]\n"
        '"GET /status" = "legacy"   # not "POST /v1/face"\n'
        '"POST /v1/face" = "modern"\n'
    )
    assert error(text).line == 4


def test_escaped_keys_are_found() -> None:
    assert error('[routes]\n"GET /st\\u0061tus" = "canery"\n').line == 2


def test_error_without_a_file() -> None:
    with pytest.raises(PlanError) as caught:
        Plan.parse('[routes]\n"GET /status" = "canery"\n')
    assert str(caught.value).startswith('line 2: unknown mode "canery"')
    assert caught.value.source is None


def test_load_reports_the_path_and_bad_encoding(tmp_path: Path) -> None:
    file = tmp_path / "plan.toml"
    file.write_bytes(b'[routes]\n"GET /status" = "legacy"\n"GET /x" = "\xff"\n')
    with pytest.raises(PlanError) as caught:
        Plan.load(file)
    assert caught.value.line == 3
    assert str(caught.value).startswith(f"{file}:3: not UTF-8 text")
    file.write_text('[routes]\n"GET /status" = "canery"\n')
    with pytest.raises(PlanError, match=rf"^{file}:2: unknown mode"):
        Plan.load(file)


def test_without_known_lists_any_route_and_task_is_taken() -> None:
    plan = Plan.parse('[routes]\n"PUT /anything/{x}" = "modern"\n[tasks]\nreindex = "modern"\n')
    assert plan.route_for("PUT", "/anything/1") is not None
    assert plan.owner_of("reindex") == "modern"


def test_a_task_goes_only_to_a_stack_that_declares_it() -> None:
    stacks = {"data_sync": ["legacy", "modern"], "audit": ["legacy"]}
    plan = Plan.parse('[tasks]\ndata_sync = "modern"\naudit = "legacy"\n', task_stacks=stacks)
    assert (plan.owner_of("data_sync"), plan.owner_of("audit")) == ("modern", "legacy")
    with pytest.raises(PlanError) as caught:
        Plan.parse('[tasks]\ndata_sync = "modern"\naudit = "modern"\n', "cutover.toml", task_stacks=stacks)
    assert str(caught.value) == 'cutover.toml:3: task "audit": modern does not declare it (only legacy does), so it would run nowhere'
    # a task the host did not list is left to known_tasks (a manager that never started is not on the board)
    assert Plan.parse('[tasks]\nreindex = "modern"\n', task_stacks=stacks).owner_of("reindex") == "modern"


def test_bad_known_route_is_the_hosts_mistake() -> None:
    with pytest.raises(PlanError, match=r'^known route "GET status": path template must start with "/"'):
        Plan.parse("", known_routes=[("GET", "status")])


# --- matching -------------------------------------------------------------------------


def test_templates_match_one_non_empty_segment_exactly() -> None:
    route = Route("GET", "/v1/jobs/{job_id}")
    assert route.matches("GET", "/v1/jobs/abc")
    assert route.matches("GET", "/v1/jobs/a%2Fb")
    assert not route.matches("GET", "/v1/jobs/")
    assert not route.matches("GET", "/v1/jobs")
    assert not route.matches("GET", "/v1/jobs/abc/")
    assert not route.matches("GET", "/v1/jobs/abc/events")
    assert not route.matches("POST", "/v1/jobs/abc")
    assert not route.matches("HEAD", "/v1/jobs/abc")
    assert not route.matches("GET", "/V1/jobs/abc")
    assert not route.matches("GET", "v1/jobs/abc")
    assert not Route("GET", "/status").matches("GET", "/status/")
    assert Route("GET", "/").matches("GET", "/")
    assert not Route("GET", "/").matches("GET", "/status")


def test_most_specific_route_wins_whatever_the_order() -> None:
    text = """[routes]
"GET /v1/jobs/{job_id}" = "legacy"
"GET /v1/{kind}/stats" = "shadow"
"GET /v1/jobs/stats" = "modern"
"GET /v1/jobs/{job_id}/{part}" = "legacy"
"GET /v1/jobs/{job_id}/log" = "modern"
"""
    plan = Plan.parse(text)
    backwards = dataclasses.replace(plan, routes=plan.routes[::-1])
    for p in (plan, backwards):
        assert p.route_for("GET", "/v1/jobs/stats").template == "/v1/jobs/stats"  # type: ignore[union-attr]
        assert p.route_for("GET", "/v1/jobs/123").template == "/v1/jobs/{job_id}"  # type: ignore[union-attr]
        assert p.route_for("GET", "/v1/audio/stats").template == "/v1/{kind}/stats"  # type: ignore[union-attr]
        assert p.route_for("GET", "/v1/jobs/1/log").template == "/v1/jobs/{job_id}/log"  # type: ignore[union-attr]
        assert p.route_for("GET", "/v1/jobs/1/out").template == "/v1/jobs/{job_id}/{part}"  # type: ignore[union-attr]
        assert p.route_for("DELETE", "/v1/jobs/1") is None


@settings(max_examples=200, deadline=None)
@given(
    templates=st.lists(st.lists(st.sampled_from(["v1", "jobs", "stats", "{a}", "{b}"]), min_size=1, max_size=3),
                       min_size=1, max_size=6),
    path=st.lists(st.sampled_from(["v1", "jobs", "stats", "x", ""]), min_size=1, max_size=3),
    method=st.sampled_from(["GET", "POST"]),
)
def test_route_for_is_the_most_specific_route_that_matches(templates: list[list[str]], path: list[str],
                                                           method: str) -> None:
    """The lookup by method and length answers what checking every route would (the first written among equals)."""
    routes, seen = [], set()
    for i, parts in enumerate(templates):
        route = Route("GET" if i % 2 else "POST", "/" + "/".join(parts))
        if (route.method, route.shape) not in seen:
            seen.add((route.method, route.shape))
            routes.append(route)
    plan = Plan(routes=tuple(routes))
    url = "/" + "/".join(path)
    matching = [route for route in routes if route.matches(method, url)]
    best = max(matching, key=lambda r: tuple(s is not None for s in r.shape), default=None)
    assert plan.route_for(method, url) is best


def test_find_ignores_placeholder_names() -> None:
    plan = parse('[routes]\n"GET /v1/jobs/{job_id}" = "modern"\n')
    assert plan.find("GET", "/v1/jobs/{id}") is plan.routes[0]
    assert plan.find("DELETE", "/v1/jobs/{id}") is None


# --- routes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "safe"),
    [("GET", True), ("HEAD", True), ("OPTIONS", True), ("POST", False), ("PUT", False), ("PATCH", False), ("DELETE", False)],
)
def test_shadow_safe_defaults_by_method(method: str, safe: bool) -> None:
    assert Route(method, "/x", "shadow").shadow_safe is safe
    assert Route(method, "/x", "shadow").mirrored is safe
    assert Route(method, "/x", "shadow", shadow_safe=not safe).mirrored is (not safe)
    assert Route(method, "/x", "legacy", shadow_safe=True).mirrored is False


def test_shadow_safe_from_the_file() -> None:
    plan = parse('[routes]\n"POST /v1/domains" = { mode = "shadow", shadow_safe = true }\n"GET /status" = { mode = "shadow", shadow_safe = false }\n')
    assert [r.mirrored for r in plan.routes] == [True, False]


def test_next_mode_sequence() -> None:
    plan = parse('[routes]\n"POST /v1/ocr" = "legacy"\n')
    seen = []
    for _ in range(6):
        route = plan.find("POST", "/v1/ocr")
        assert route is not None
        seen.append((route.mode, route.percent))
        plan = plan.with_mode(route.method, route.template, *route.next_mode())
    assert seen == [
        ("legacy", 0.0),
        ("shadow", 0.0),
        ("canary", 10.0),
        ("canary", 50.0),
        ("modern", 0.0),
        ("modern", 0.0),
    ]
    assert plan.routes == (Route("POST", "/v1/ocr", "modern", 0.0, False),)


@pytest.mark.parametrize(
    ("percent", "then"),
    [(0, ("canary", 10.0)), (9.99, ("canary", 10.0)), (10, ("canary", 50.0)), (49.9, ("canary", 50.0)),
     (50, ("modern", 0.0)), (100, ("modern", 0.0))],
)
def test_next_mode_from_any_canary(percent: float, then: tuple[str, float]) -> None:
    assert Route("GET", "/status", "canary", percent).next_mode() == then


def test_route_validates_on_construction() -> None:
    with pytest.raises(PlanError, match=r"^unknown mode"):
        Route("GET", "/x", "Modern")
    with pytest.raises(PlanError, match=r"^percent applies to canary mode only"):
        Route("GET", "/x", "modern", 100)
    with pytest.raises(PlanError, match=r"^canary percent must be between 0 and 100, got 100.5"):
        Route("GET", "/x", "canary", 100.5)
    assert Route("GET", "/x", "canary", 100).percent == 100.0
    assert isinstance(Route("GET", "/x", "canary", 7).percent, float)


# --- changes --------------------------------------------------------------------------


def test_with_mode_returns_a_new_plan() -> None:
    plan = parse('[routes]\n"POST /v1/ocr" = "legacy"\n"GET /status" = "shadow"\n')
    moved = plan.with_mode("POST", "/v1/ocr", "canary", 25)
    assert plan.routes[0] == Route("POST", "/v1/ocr", "legacy")  # untouched
    assert moved.routes[0] == Route("POST", "/v1/ocr", "canary", 25.0)
    assert moved.routes[1] is plan.routes[1]
    assert moved.source == plan.source and moved.known_routes == plan.known_routes
    # percent is kept within canary, and dropped on leaving it
    assert moved.with_mode("POST", "/v1/ocr", "canary").find("POST", "/v1/ocr").percent == 25.0  # type: ignore[union-attr]
    assert moved.with_mode("POST", "/v1/ocr", "modern").find("POST", "/v1/ocr").percent == 0.0  # type: ignore[union-attr]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.routes = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.tasks["data_sync"] = "modern"  # type: ignore[index]


def test_with_mode_adds_a_known_route_and_keeps_shadow_safe() -> None:
    plan = parse('[routes]\n"POST /v1/jobs" = { mode = "legacy", shadow_safe = true }\n')
    added = plan.with_mode("DELETE", "/v1/jobs/{id}", "shadow")
    assert added.routes[-1] == Route("DELETE", "/v1/jobs/{id}", "shadow", 0.0, False)
    assert added.with_mode("POST", "/v1/jobs", "shadow").routes[0].mirrored


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("POST", "/v1/ocr", "canery"), 'unknown mode "canery"'),
        (("POST", "/v1/ocr", "canary", 150), "canary percent must be between 0 and 100, got 150"),
        (("POST", "/v1/ocr", "canary"), "canary mode needs a percent"),
        (("POST", "/v1/ocr", "modern", 100), "percent applies to canary mode only"),
        (("POST", "/v1/face", "modern"), 'route "POST /v1/face" cannot be in modern mode: modern does not serve it'),
        (("GET", "v1/ocr", "modern"), 'path template must start with "/"'),
    ],
)
def test_with_mode_validates(args: tuple, message: str) -> None:
    plan = parse('[routes]\n"POST /v1/ocr" = "legacy"\n')
    with pytest.raises(PlanError) as caught:
        plan.with_mode(*args)
    assert str(caught.value).startswith(message)  # no line: the change is not in a file
    assert caught.value.line is None


def test_with_owner() -> None:
    plan = parse('[tasks]\ndata_sync = "legacy"\n')
    assert plan.with_owner("data_sync", "modern").owner_of("data_sync") == "modern"
    assert plan.owner_of("data_sync") == "legacy"
    with pytest.raises(PlanError, match='owner must be legacy or modern, got "shadow"'):
        plan.with_owner("data_sync", "shadow")
    with pytest.raises(PlanError, match='unknown task "reindex"'):
        plan.with_owner("reindex", "modern")


def test_owner_of_defaults_to_legacy() -> None:
    plan = Plan.parse('[tasks]\nreindex = "modern"\n')
    assert plan.owner_of("reindex") == "modern"
    assert plan.owner_of("data_sync") == "legacy"
    assert Plan().owner_of("anything") == "legacy"


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(PlanError, match=r'^duplicate route "GET /a/{y}": same as "GET /a/{x}"$'):
        Plan((Route("GET", "/a/{x}"), Route("GET", "/a/{y}")))
    with pytest.raises(PlanError, match="sticky_header must be a header name"):
        Plan(sticky_header="")


def test_to_dict_is_json() -> None:
    plan = parse(
        '[routes]\n"POST /v1/ocr" = { mode = "canary", percent = 10 }\n"GET /status" = "shadow"\n'
        '[canary]\nsticky_header = "X-Cutover-Key"\n[tasks]\ndata_sync = "modern"\n'
    )
    data = plan.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["source"] == "cutover.toml"
    assert data["sticky_header"] == "X-Cutover-Key"
    assert data["tasks"] == {"data_sync": "modern"}
    assert data["routes"][0] == {
        "route": "POST /v1/ocr",
        "method": "POST",
        "template": "/v1/ocr",
        "mode": "canary",
        "percent": 10.0,
        "shadow_safe": False,
        "diff": {},
        "auto": False,
        "gates": {},
        "id_from": None,
        "id_param": None,
        "shadow_write": "run",
        "aa_sample": None,
        "settle": None,
    }
    assert data["known_tasks"] == ["data_sync"]
    assert "GET /v1/jobs/{id}" in data["known_routes"]
    # enough to rebuild the same routes
    rebuilt = tuple(Route(r["method"], r["template"], r["mode"], r["percent"], r["shadow_safe"]) for r in data["routes"])
    assert rebuilt == plan.routes


def test_apps_are_import_strings_in_their_own_table() -> None:
    plan = parse('[apps]\nlegacy = "myservice.legacy:cohost"\npool_initializer = "myservice.models:load"\n')
    assert dict(plan.apps) == {"legacy": "myservice.legacy:cohost", "pool_initializer": "myservice.models:load"}
    assert str(error('[apps]\nlegacy = "no_colon"\n')).startswith("cutover.toml:2: ")
    assert "unknown key" in str(error('[apps]\nfrontend = "x:y"\n'))


def test_a_route_only_legacy_serves_is_a_warning_with_its_line_not_an_error() -> None:
    text = '[routes]\n"GET /status" = "legacy"\n"GET /legacy-only/{x}" = "legacy"\n'
    plan = Plan.parse(text, "cutover.toml", known_routes=KNOWN_ROUTES, modern_routes=KNOWN_ROUTES)
    assert plan.warnings == (
        'cutover.toml:3: route "GET /legacy-only/{x}" is declared by neither app '
        "(fine for a twisted.web resource tree, which cannot be listed)",
    )
    assert plan.in_modern(plan.routes[1]) is False and plan.in_modern(plan.routes[0]) is True
    # declared by legacy only (a Klein URL map): no warning, and it may stay on legacy
    quiet = Plan.parse(text, "cutover.toml", known_routes=[*KNOWN_ROUTES, ("GET", "/legacy-only/{y}")],
                       modern_routes=KNOWN_ROUTES)
    assert quiet.warnings == ()
    assert "cannot be in shadow mode" in str(pytest.raises(PlanError, quiet.with_mode, "GET", "/legacy-only/{x}", "shadow").value)
    # modern's routes unknown (a bare ASGI app): nothing can be checked, nothing refused
    assert Plan.parse(text.replace('= "legacy"\n"GET /l', '= "modern"\n"GET /l'), "cutover.toml").routes[0].mode == "modern"


def test_diff_rules_come_from_diff_then_the_route() -> None:
    plan = parse(
        '[diff]\nignore = ["trace_id"]\nheaders = ["content-type", "location"]\n'
        '[routes]\n"POST /v1/jobs" = { mode = "legacy", ignore_values = ["job_id"], ignore = ["at"], float_tolerance = 0.5 }\n'
        '"GET /status" = { mode = "legacy", headers = ["allow"] }\n'
    )
    jobs = plan.rules_for(plan.find("POST", "/v1/jobs"))
    assert jobs.ignore == ("trace_id", "at") and jobs.ignore_values == ("job_id",)
    assert jobs.float_tolerance == 0.5 and jobs.headers == ("content-type", "location")
    assert plan.rules_for(plan.find("GET", "/status")).headers == ("allow",)
    assert plan.rules_for(None).ignore == ("trace_id",)  # an unrouted request gets the defaults
    assert plan.with_mode("POST", "/v1/jobs", "shadow").rules_for(plan.find("POST", "/v1/jobs")) == jobs  # kept by a move


def test_app_lines_place_load_errors() -> None:
    plan = parse('[routes]\n\n[apps]\nlegacy = "a.b:c"\nmodern = "d:e"\napp_dir = "src"\n')
    assert plan.place("modern") == "cutover.toml:5: " and plan.apps["app_dir"] == "src"
    assert "import string" in str(error('[apps]\nmodern = "d:e f"\n'))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[gates]\nmin_comparisons = -1\n", "cutover.toml:2: gate min_comparisons must be a number >= 0, got -1"),
        ("[gates]\nmax_mismatch = 2\n", "cutover.toml:2: gate max_mismatch is a rate from 0 to 1, got 2"),
        ("[gates]\ninterval = 0\n", "cutover.toml:2: [gates] interval must be more than 0 seconds, got 0"),
        ("[gates]\nfoo = 1\n", 'cutover.toml:2: unknown gate "foo" in [gates]'),
        ("[gates.canary]\nmin_time = true\n", "cutover.toml:1: gate min_time must be a number >= 0, got true"),
        ("[gates]\n\n[gates.canary]\nzz = 1\n", 'cutover.toml:3: unknown gate "zz" in [gates] canary'),
        ('[routes]\n"GET /status" = { mode = "shadow", auto = 1 }\n', "cutover.toml:2: auto must be true or false, got 1"),
        ('[routes]\n"GET /status" = { mode = "shadow", gates = { interval = 3 } }\n',
         'cutover.toml:2: unknown gate "interval" in route "GET /status"'),
        ('[routes]\n"GET /status" = { mode = "shadow", gates = 3 }\n',
         'cutover.toml:2: gates of route "GET /status" must be a table of thresholds, got 3'),
    ],
)
def test_gate_keys_are_checked_with_the_line(text: str, message: str) -> None:
    assert str(error(text)).startswith(message)


def test_gates_resolve_from_defaults_plan_step_route_and_route_step() -> None:
    from bridge.host.gates import DEFAULTS, thresholds

    plan = parse(
        '[gates]\nmin_comparisons = 50\nmin_time = 10\n[gates.canary]\nmin_time = 20\n'
        '[routes]\n"GET /status" = { mode = "shadow", auto = true, gates = { max_p99_ratio = 3, canary = { min_time = 30 } } }\n'
        '"POST /v1/ocr" = "legacy"\n'
    )
    status, ocr = plan.find("GET", "/status"), plan.find("POST", "/v1/ocr")
    assert status is not None and status.auto and ocr is not None and not ocr.auto
    assert thresholds(plan, ocr, "shadow") == {**DEFAULTS, "min_comparisons": 50, "min_time": 10}
    assert thresholds(plan, ocr, "canary")["min_time"] == 20
    assert thresholds(plan, status, "shadow") == {**DEFAULTS, "min_comparisons": 50, "min_time": 10, "max_p99_ratio": 3}
    assert thresholds(plan, status, "canary")["min_time"] == 30
    moved = plan.with_mode("GET", "/status", "canary", 10).find("GET", "/status")
    assert moved is not None and moved.auto and moved.gates == status.gates  # a move keeps them
