"""Figures and plots of the stream scenarios (reconnect, slow), from a run directory and the
driver's result in ``meta["stream"]`` (phase times, the kill, the publisher, the verdict).
Never imports Locust; matplotlib only to plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from loadtest.locust.results import (
    _latency,
    _r,
    cdf_plot,
    edge_ids,
    hist_pct,
    read_histograms,
    read_meta,
    read_samples,
    read_stats,
    read_timeline,
    timeline_percentiles,
)


def windows(meta: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Named wall-clock windows of a run: before and after the kill, or before and while
    slow readers exist (the first 2 s of the steady phase are left out: the stream starts)."""
    st = meta.get("stream", {})
    steady, settle = st.get("t_steady"), st.get("t_settle")
    if steady is None or settle is None:
        return {}
    pivot = st.get("t_kill") or st.get("t_slow")
    if pivot is None:
        return {"steady": (steady + 2, settle)}
    name = "after_kill" if "t_kill" in st else "while_slow"
    return {"before": (steady + 2, pivot), name: (pivot, settle)}


def window_latency(tl: dict[int, dict[float, int]], lo: float, hi: float) -> dict[str, Any]:
    merged: dict[float, int] = {}
    for sec, h in tl.items():
        if lo <= sec and sec + 1 <= hi:
            for ms, n in h.items():
                merged[ms] = merged.get(ms, 0) + n
    return {"events": sum(merged.values()), "p50_ms": _r(hist_pct(merged, 50)),
            "p99_ms": _r(hist_pct(merged, 99)), "max_ms": max(merged, default=None)}


def edge_rss(samples: list[dict[str, float]], lo: float, hi: float) -> dict[str, Any]:
    edges = edge_ids(samples)
    rows = [sum(s[f"edge_{e}_rss_kib"] for e in edges
                if not math.isnan(s[f"edge_{e}_rss_kib"])) / 1024
            for s in samples if lo <= s["t"] <= hi]
    if not rows:
        return {}
    return {"start_mib": _r(rows[0]), "max_mib": _r(max(rows)), "end_mib": _r(rows[-1])}


def summarize_stream(out: Path, meta: dict[str, Any], summary: dict[str, Any]) -> None:
    stats = read_stats(out)
    for name in ("resume", "outage", "event"):
        summary[name] = _latency(stats, name)
    tl = read_timeline(out).get("event", {})
    samples = read_samples(out)
    summary["event_latency_by_window"] = {
        name: window_latency(tl, lo, hi) for name, (lo, hi) in windows(meta).items()}
    summary["edge_rss_by_window"] = {
        name: edge_rss(samples, lo, hi) for name, (lo, hi) in windows(meta).items()}


# ------------------------------------------------------------------ plots


def plot_stream(out: Path, scenario: str, plt: Any, save: Any) -> None:
    meta = read_meta(out)
    t0 = meta.get("locust_started") or 0.0
    marks = [(v - t0, k[2:]) for k, v in meta.get("stream", {}).items()
             if k in ("t_steady", "t_kill", "t_slow", "t_settle") and v]
    rows = timeline_percentiles(read_timeline(out).get("event", {}))
    if rows:
        fig, ax = plt.subplots(figsize=(8, 4.2))
        ts = [sec + 0.5 - t0 for sec, *_ in rows]
        for k, label in ((2, "p50"), (3, "p95"), (4, "p99")):
            ax.plot(ts, [r[k] for r in rows], marker=".", label=label)
        ax.set_yscale("log")
        ax.set_ylabel("append to arrival, ms (log)")
        ax2 = ax.twinx()
        ax2.bar(ts, [r[1] for r in rows], width=0.9, color="grey", alpha=0.25,
                label="events received per second")
        ax2.set_ylabel("events/s (reading clients)")
        for x, label in marks:
            ax.axvline(x, color="black", ls=":", lw=1)
            ax.annotate(label, (x, 1), xycoords=("data", "axes fraction"), fontsize=8,
                        rotation=90, va="top", ha="right")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.set_xlabel("seconds since Locust started")
        ax.set_title(f"{scenario}: event latency of reading clients, per second")
        ax.grid(alpha=0.3)
        save(fig, "event_latency.png")
    hists = read_histograms(out)
    cdf_plot(plt, save, hists, ("resume", "outage"), "resume_latency.png",
             "ms (log): resume = connect to resumed; outage = drop to resumed",
             "fraction of reconnections", f"{scenario}: reconnection time (CDF)")
