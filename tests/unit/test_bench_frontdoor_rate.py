"""The fixed-rate block of ``bench frontdoor``: wrk's raw latency distribution read back and pooled."""

from __future__ import annotations

import pytest

from bench.frontdoor import parse_hist, pooled_ms

WRK_TAIL = """  496 requests in 3.02s, 352.08KB read
Requests/sec:    164.30
HIST 542:1 600:3 1000:95 25000:1
"""


def test_the_distribution_is_read_from_the_hist_line() -> None:
    assert parse_hist(WRK_TAIL) == {542: 1, 600: 3, 1000: 95, 25000: 1}


def test_output_without_the_line_is_an_error_that_shows_it() -> None:
    with pytest.raises(RuntimeError, match="no latency distribution"):
        parse_hist("Requests/sec: 1.0\n")


def test_percentiles_come_from_the_pooled_counts() -> None:
    one, other = parse_hist(WRK_TAIL), {1000: 50, 30000: 50}
    pooled = {v: one.get(v, 0) + other.get(v, 0) for v in {*one, *other}}  # 200 requests
    assert pooled_ms(one, 0.5) == 1.0 and pooled_ms(one, 0.99) == 1.0 and pooled_ms(one, 1.0) == 25.0
    assert pooled_ms(pooled, 0.5) == 1.0 and pooled_ms(pooled, 0.99) == 30.0
    assert pooled_ms({}, 0.99) == 0.0
