"""The dashboard's queries evaluated in Python on scrapes of a ``/metrics`` page
(``loadtest/render_dashboard.py``): rates from counter deltas, quantiles from histogram bucket
deltas, as PromQL's ``rate``, ``increase`` and ``histogram_quantile`` do, except that a labelled
series absent from a scrape counts as 0 (its first increments show)."""

from __future__ import annotations

import math
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, tuple[tuple[str, str], ...]]
"""A series: its name and its sorted labels."""


@dataclass
class Scrape:
    t: float                      # seconds since the load started
    samples: dict[Key, float]
    clients: int                  # client-side open connections at that moment


def parse(text: str) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def value(s: Scrape, name: str, **match: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {lbl: v for (n, lbl), v in s.samples.items()
            if n == name and all(dict(lbl).get(k) == w for k, w in match.items())}


def _window(scrapes: list[Scrape], i: int, window: float) -> int:
    j = i
    while j > 0 and scrapes[i].t - scrapes[j - 1].t <= window + 1e-6:
        j -= 1
    return j


def increase(scrapes: list[Scrape], i: int, j: int, name: str, by: str | None,
             **match: str) -> dict[str, float]:
    """``sum by (by) (increase(name[...]))`` between scrapes j and i; a series absent from a
    scrape is 0 (prometheus_client exposes a labelled child from its first increment)."""
    out: dict[str, float] = {}
    new, old = value(scrapes[i], name, **match), value(scrapes[j], name, **match)
    for lbl, v in new.items():
        d = v - old.get(lbl, 0.0)
        if d < 0:  # counter reset (a process restarted without its multiprocess file)
            d = v
        key = dict(lbl).get(by, "") if by else ""
        out[key] = out.get(key, 0.0) + d
    return out


def rate_by(scrapes: list[Scrape], name: str, by: str | None, window: float,
            ) -> tuple[list[float], dict[str, list[float]]]:
    """``sum by (by) (rate(name[window]))`` at every scrape."""
    ts: list[float] = []
    series: dict[str, list[float]] = {}
    for i, s in enumerate(scrapes):
        j = _window(scrapes, i, window)
        if j == i:
            continue
        dt_s = s.t - scrapes[j].t
        inc = increase(scrapes, i, j, name, by)
        ts.append(s.t)
        for k in set(series) | set(inc):
            series.setdefault(k, [0.0] * (len(ts) - 1)).append(inc.get(k, 0.0) / dt_s)
    return ts, series


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """PromQL's histogram_quantile on cumulative (upper bound, count) pairs."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if math.isinf(le):  # in the +Inf bucket: the highest finite bound
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-12)
        prev_le, prev_c = le, c
    return math.nan


def quantiles(scrapes: list[Scrape], name: str, qs: tuple[float, ...], window: float,
              ) -> tuple[list[float], dict[float, list[float]]]:
    """``histogram_quantile(q, sum by (le) (rate(name_bucket[window])))`` at every scrape."""
    ts: list[float] = []
    out: dict[float, list[float]] = {q: [] for q in qs}
    for i, s in enumerate(scrapes):
        j = _window(scrapes, i, window)
        if j == i:
            continue
        inc = increase(scrapes, i, j, name + "_bucket", "le")
        buckets = [(float(le), c) for le, c in inc.items()]
        ts.append(s.t)
        for q in qs:
            out[q].append(histogram_quantile(q, buckets))
    return ts, out


def total(scrapes: list[Scrape], name: str, by: str) -> dict[str, float]:
    return increase(scrapes, len(scrapes) - 1, 0, name, by) if len(scrapes) > 1 else {}


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return math.nan
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]
