"""The dashboard's queries in Python (loadtest/promql.py), as PromQL evaluates them."""

from __future__ import annotations

import math

from loadtest.promql import (
    Key,
    Scrape,
    histogram_quantile,
    increase,
    parse,
    quantiles,
    rate_by,
    total,
)

PAGE = """# TYPE agentia_frames_total counter
agentia_frames_total{node="a"} 10
agentia_frames_total{node="b"} 4
# TYPE agentia_rtt_seconds histogram
agentia_rtt_seconds_bucket{le="0.1"} 5
agentia_rtt_seconds_bucket{le="1.0"} 9
agentia_rtt_seconds_bucket{le="+Inf"} 10
agentia_rtt_seconds_count 10
agentia_rtt_seconds_sum 3.0
"""


def scrape(t: float, samples: dict[Key, float]) -> Scrape:
    return Scrape(t=t, samples=samples, clients=0)


def frames(a: float, b: float | None = None) -> dict[Key, float]:
    out = {("agentia_frames_total", (("node", "a"),)): a}
    if b is not None:
        out[("agentia_frames_total", (("node", "b"),))] = b
    return out


def test_parse_keys_series_by_name_and_sorted_labels() -> None:
    got = parse(PAGE)
    assert got[("agentia_frames_total", (("node", "a"),))] == 10
    assert got[("agentia_rtt_seconds_bucket", (("le", "+Inf"),))] == 10


def test_histogram_quantile_interpolates_within_a_bucket() -> None:
    buckets = [(0.1, 5.0), (1.0, 9.0), (math.inf, 10.0)]
    assert histogram_quantile(0.5, buckets) == 0.1  # rank 5: the first bucket's top
    assert math.isclose(histogram_quantile(0.7, buckets), 0.1 + 0.9 * 2 / 4)
    assert histogram_quantile(0.99, buckets) == 1.0  # in +Inf: the highest finite bound
    assert math.isnan(histogram_quantile(0.5, []))
    assert math.isnan(histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]))


def test_increase_counts_an_absent_series_from_0_and_a_reset_from_its_value() -> None:
    s = [scrape(0, frames(10)), scrape(2, frames(16, 3)), scrape(4, frames(2, 5))]
    assert increase(s, 1, 0, "agentia_frames_total", "node") == {"a": 6, "b": 3}
    assert increase(s, 2, 1, "agentia_frames_total", "node") == {"a": 2, "b": 2}  # a reset
    assert increase(s, 1, 0, "agentia_frames_total", None) == {"": 9}
    assert total(s, "agentia_frames_total", "node") == {"a": 2, "b": 5}  # a after its reset: 2


def test_rate_by_divides_each_windows_increase_by_its_seconds() -> None:
    s = [scrape(0, frames(0)), scrape(2, frames(4)), scrape(4, frames(12, 2))]
    ts, series = rate_by(s, "agentia_frames_total", "node", window=2)
    assert ts == [2, 4]
    assert series == {"a": [2.0, 4.0], "b": [0.0, 1.0]}  # b appears late: 0 before


def test_quantiles_from_bucket_increases_over_the_window() -> None:
    def hist(fast: float, slow: float) -> dict[Key, float]:
        return {("agentia_rtt_seconds_bucket", (("le", "0.1"),)): fast,
                ("agentia_rtt_seconds_bucket", (("le", "+Inf"),)): fast + slow}

    s = [scrape(0, hist(100, 0)), scrape(2, hist(100, 10))]  # the window: 10 slow only
    ts, out = quantiles(s, "agentia_rtt_seconds", (0.5,), window=2)
    assert ts == [2] and out[0.5] == [0.1]  # all in +Inf: the highest finite bound
