"""The plan's shadow sample rate: a route key ``sample`` (0 to 1), its default under ``[diff]``, errors with file:line."""

from __future__ import annotations

import pytest

from bridge.errors import PlanError
from bridge.host.plan import Plan


def parse(text: str) -> Plan:
    return Plan.parse(text, "cutover.toml")


def test_a_route_samples_its_own_rate_else_the_diff_default_else_all() -> None:
    plan = parse('[routes]\n"POST /hot" = { mode = "shadow", shadow_safe = true, sample = 0.1 }\n'
                 '"GET /rare" = "shadow"\n')
    hot, rare = plan.routes
    assert (plan.sample_for(hot), plan.sample_for(rare)) == (0.1, 1.0)
    with_default = parse('[routes]\n"POST /hot" = { mode = "shadow", sample = 1 }\n"GET /rare" = "shadow"\n'
                         "[diff]\nsample = 0.5\n")
    hot, rare = with_default.routes
    assert (with_default.sample_for(hot), with_default.sample_for(rare)) == (1.0, 0.5)
    assert with_default.rules_for(rare).ignore == ()  # sample is not a diff rule: DiffRules never sees it


def test_the_rate_survives_a_mode_change_and_shows_in_the_plan_dict() -> None:
    plan = parse('[routes]\n"POST /hot" = { mode = "legacy", sample = 0.2 }\n"GET /other" = "legacy"\n')
    moved = plan.with_mode("POST", "/hot", "shadow")
    assert moved.sample_for(moved.routes[0]) == 0.2
    routes = moved.to_dict()["routes"]
    assert routes[0]["sample"] == 0.2 and "sample" not in routes[1]  # only a route that sets one
    assert moved.to_dict()["shadow_sample"] == 1.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[routes]\n"POST /x" = { mode = "shadow", sample = 1.5 }\n',
         'cutover.toml:2: sample must be a number from 0 to 1 (the share of requests mirrored), got 1.5'),
        ('[routes]\n\n[routes."POST /x"]\nmode = "shadow"\nsample = "10%"\n',
         'cutover.toml:5: sample must be a number from 0 to 1 (the share of requests mirrored), got "10%"'),
        ('[routes]\n"POST /x" = { mode = "shadow", sample = true }\n',
         'cutover.toml:2: sample must be a number from 0 to 1 (the share of requests mirrored), got true'),
        ('[diff]\nheaders = ["content-type"]\nsample = -0.1\n',
         'cutover.toml:3: sample must be a number from 0 to 1 (the share of requests mirrored), got -0.1'),
        ('[diff]\nsample = nan\n',
         'cutover.toml:2: sample must be a number from 0 to 1 (the share of requests mirrored), got nan'),
    ],
)
def test_a_bad_rate_is_refused_with_its_line(text: str, message: str) -> None:
    with pytest.raises(PlanError) as caught:
        parse(text)
    assert str(caught.value) == message
