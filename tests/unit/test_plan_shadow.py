"""The plan's keys for shadow on stateful routes: id mapping, write mode, A/A sample, settle, the catch-all."""

from __future__ import annotations

import pytest

from bridge.errors import PlanError
from bridge.host.plan import Plan

JOBS = '''[routes]
"POST /v1/jobs" = { mode = "shadow", shadow_safe = true, id_from = "job_id", shadow_write = "validate" }
"GET /v1/jobs/{job_id}" = { mode = "shadow", id_param = "job_id", settle = 5, aa_sample = 0.5 }
"*" = { mode = "shadow", header_rules = { "x-trace" = "present" }, headers = ["x-trace"] }

[shadow]
aa_sample = 0.25
'''


def test_the_keys_reach_the_routes() -> None:
    plan = Plan.parse(JOBS)
    create, follow = plan.routes
    assert (create.id_from, create.shadow_write, create.id_param) == ("job_id", "validate", None)
    assert (follow.id_param, follow.param_index, follow.settle) == ("job_id", 2, 5.0)
    assert plan.aa_sample(create) == 0.25 and plan.aa_sample(follow) == 0.5
    assert plan.settle(create) == 0.0 and plan.settle(follow) == 5.0
    assert plan.catch_all is not None and plan.catch_all.key == "*" and plan.catch_all.mode == "shadow"
    assert plan.route_for("GET", "/anything") is None  # the catch-all takes what no route does, apart
    rules = plan.rules_for(plan.catch_all)
    assert rules.headers == ("x-trace",) and rules.rule_for("X-Trace") == "present"
    assert plan.to_dict()["catch_all"]["route"] == "*" and plan.to_dict()["shadow"] == {"aa_sample": 0.25}
    # a change of mode keeps them
    moved = plan.with_mode("GET", "/v1/jobs/{job_id}", "modern")
    assert moved.routes[1].id_param == "job_id" and moved.routes[1].settle == 5.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[routes]\n"GET /v1/jobs/{job_id}" = { mode = "shadow", id_param = "id" }\n',
         'cutover.toml:2: id_param must name a placeholder of "/v1/jobs/{job_id}", got "id"'),
        ('[routes]\n"POST /v1/jobs" = { mode = "shadow", id_from = "jobs[].id" }\n',
         'cutover.toml:2: id_from must be a dotted JSON path such as "job_id", got "jobs[].id"'),
        ('[routes]\n"POST /v1/jobs" = { mode = "shadow", shadow_write = "dry" }\n',
         'cutover.toml:2: shadow_write must be "run" or "validate", got "dry"'),
        ('[routes]\n"GET /x" = { mode = "shadow", aa_sample = 2 }\n',
         "cutover.toml:2: aa_sample must be a number from 0 to 1 (a share of requests), got 2"),
        ('[routes]\n"GET /x" = { mode = "shadow", settle = -1 }\n',
         "cutover.toml:2: settle must be a number of seconds from 0 to 60, got -1"),
        ('[routes]\n"*" = { mode = "modern" }\n',
         'cutover.toml:2: the catch-all route can be legacy or shadow, not "modern"'),
        ('[shadow]\n\naa_sampel = 0.1\n',
         'cutover.toml:3: unknown key "aa_sampel" in [shadow] (one of aa_sample, settle)'),
        ('[diff]\nheader_rules = { allow = "sorted" }\n',
         'cutover.toml:2: header rule "sorted" for "allow" in [diff]: one of exact, media_type, path, set, present'),
        ('[diff]\nheader_rules = ["allow"]\n',
         'cutover.toml:2: header_rules must be a table such as { allow = "set" }, got an array'),
    ],
)
def test_mistakes_name_the_line(text: str, message: str) -> None:
    with pytest.raises(PlanError) as caught:
        Plan.parse(text, "cutover.toml")
    assert str(caught.value) == message


def test_the_shipped_plan_maps_job_ids() -> None:
    plan = Plan.load("cutover.toml")
    assert plan.find("POST", "/v1/jobs").id_from == "job_id"
    assert {plan.find(m, "/v1/jobs/{job_id}").id_param for m in ("GET", "DELETE")} == {"job_id"}
