"""Reads a Locust run's output directory and sums it up: figures (``summary.json``) and PNG
plots. Never imports Locust; matplotlib is imported only to plot.

Files in a run directory (``run.py`` writes them):

* ``locust_stats.csv``, ``locust_failures.csv``, ``locust_stats_history.csv`` (Locust's
  ``--csv`` with ``--csv-full-history``), ``report.html`` (``--html``);
* ``locust_agentia.csv``: the suite's counters over all Locust processes, once a second
  (users, open, opened, failed, dropped, turns_started, turns_done, turns_failed);
* ``locust_response_times.json``: every request name's response-time histogram (ms -> count);
* ``samples.csv``: what ``run.py`` read from /proc twice a second (per edge process RSS, CPU
  seconds and open file descriptors; Locust's and Redis's RSS; kernel slab).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

STATS_PERCENTILES = ("50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%",
                     "99.99%", "100%")


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _num(v: str | None) -> float:
    try:
        return float(v) if v not in (None, "", "N/A") else math.nan
    except ValueError:
        return math.nan


def read_stats(out: Path) -> dict[str, dict[str, float]]:
    """``{name: {column: number}}`` from locust_stats.csv (names without the WS type)."""
    return {r["Name"]: {k: _num(v) for k, v in r.items() if k not in ("Type", "Name")}
            for r in _rows(out / "locust_stats.csv")}


def read_failures(out: Path) -> list[dict[str, Any]]:
    return [{"name": r["Name"], "error": r["Error"], "count": int(_num(r["Occurrences"]))}
            for r in _rows(out / "locust_failures.csv")]


def read_counters(out: Path) -> list[dict[str, float]]:
    return [{k: _num(v) for k, v in r.items()} for r in _rows(out / "locust_agentia.csv")]


def read_samples(out: Path) -> list[dict[str, float]]:
    return [{k: _num(v) for k, v in r.items()} for r in _rows(out / "samples.csv")]


def _response_times(out: Path) -> dict[str, Any]:
    path = out / "locust_response_times.json"
    return json.loads(path.read_text()) if path.exists() else {}


def read_histograms(out: Path) -> dict[str, dict[float, int]]:
    """Each request name's whole-run histogram (rounded ms -> count), from Locust's stats."""
    raw = _response_times(out).get("response_times_ms", {})
    return {name.split(" ", 1)[-1]: {float(k): int(v) for k, v in h.items()}
            for name, h in raw.items()}


def read_timeline(out: Path) -> dict[str, dict[int, dict[float, int]]]:
    """``{name: {unix second: {ms: count}}}``, successes; ``"<name> failed"`` for failures."""
    raw = _response_times(out).get("per_second", {})
    return {name: {int(sec): {float(ms): int(n) for ms, n in h.items()}
                   for sec, h in secs.items()} for name, secs in raw.items()}


def read_meta(out: Path) -> dict[str, Any]:
    path = out / "meta.json"
    return json.loads(path.read_text()) if path.exists() else {}


def edge_ids(samples: list[dict[str, float]]) -> list[str]:
    return sorted({k.split("_")[1] for s in samples for k in s if k.startswith("edge_")
                   and k.endswith("_fds")}, key=int)


def connections(s: dict[str, float], base: dict[str, float], edge: str) -> float:
    """An edge's open connections: its own gauge, else its open fds above the baseline."""
    n = s.get(f"edge_{edge}_conns", math.nan)
    if not math.isnan(n):
        return n
    # (a restarted process has fewer fds than the baseline until it takes connections)
    d = s.get(f"edge_{edge}_fds", math.nan) - base.get(f"edge_{edge}_fds", math.nan)
    return d if math.isnan(d) else max(0.0, d)


def hist_pct(hist: dict[float, int], p: float) -> float:
    total = sum(hist.values())
    if not total:
        return math.nan
    seen = 0
    for ms in sorted(hist):
        seen += hist[ms]
        if seen >= total * p / 100:
            return ms
    return max(hist)


def cdf_plot(plt: Any, save: Any, hists: dict[str, dict[float, int]], names: tuple[str, ...],
             filename: str, xlabel: str, ylabel: str, title: str) -> None:
    """One CDF per named histogram that has samples, on a log time axis, p50/p99 in the legend."""
    names = tuple(n for n in names if hists.get(n))
    if not names:
        return
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for name in names:
        h = hists[name]
        total, seen = sum(h.values()), 0
        xs, ys = [max(min(h), 0.5)], [0.0]
        for ms in sorted(h):
            seen += h[ms]
            xs.append(max(ms, 0.5))
            ys.append(seen / total)
        ax.step(xs, ys, where="post", label=f"{name} (n={total}, p50 "
                f"{hist_pct(h, 50):.0f} ms, p99 {hist_pct(h, 99):.0f} ms)")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, filename)


def _r(x: float, nd: int = 1) -> float | None:
    return None if x is None or math.isnan(x) else round(x, nd)


def _latency(stats: dict[str, dict[str, float]], name: str) -> dict[str, Any]:
    row = stats.get(name)
    if row is None:
        return {"requests": 0, "failures": 0}
    return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
            "p50_ms": _r(row["50%"]), "p95_ms": _r(row["95%"]), "p99_ms": _r(row["99%"]),
            "max_ms": _r(row["100%"]), "mean_ms": _r(row["Average Response Time"])}


def timeline_percentiles(tl: dict[int, dict[float, int]], window: int = 1
                         ) -> list[tuple[int, int, float, float, float]]:
    """(second, count, p50, p95, p99) per ``window`` seconds."""
    if not tl:
        return []
    out = []
    first, last = min(tl), max(tl)
    for start in range(first, last + 1, window):
        merged: dict[float, int] = {}
        for sec in range(start, start + window):
            for ms, n in tl.get(sec, {}).items():
                merged[ms] = merged.get(ms, 0) + n
        count = sum(merged.values())
        out.append((start, count, hist_pct(merged, 50), hist_pct(merged, 95),
                    hist_pct(merged, 99)))
    return out


def summarize(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    stats, samples, counters = read_stats(out), read_samples(out), read_counters(out)
    summary: dict[str, Any] = {**meta, "failures": read_failures(out)}
    summary["handshake"] = _latency(stats, "handshake")
    summary["drops"] = int(stats.get("drop", {}).get("Request Count", 0))
    if counters:
        summary["peak_open_client_side"] = int(max(c["open"] for c in counters))
    if meta["scenario"] == "chat":
        for name in ("ack", "first_chunk", "full_turn"):
            summary[name] = _latency(stats, name)
        last = counters[-1] if counters else {}
        summary["turns_sent"] = int(last.get("turns_started", 0))
        summary["turns_completed"] = summary["full_turn"]["requests"] - summary["full_turn"][
            "failures"]
        summary["turns_failed"] = int(last.get("turns_failed", 0))
        return summary
    if meta["scenario"] in ("reconnect", "slow"):
        from loadtest.locust.streamresults import summarize_stream

        summarize_stream(out, meta, summary)
    summary["pong"] = _latency(stats, "pong")
    if not samples:
        return summary
    edges, base = edge_ids(samples), samples[0]
    totals = [sum(connections(s, base, e) for e in edges) for s in samples]
    peak = max(totals)
    target = meta.get("target", peak)
    summary["peak_open_edge_side"] = int(peak)
    # the ramp on the edges' side: from 1 % to 99 % of the target (gauges move once a second)
    lo = next((i for i, n in enumerate(totals) if n >= 0.01 * target), None)
    hi = next((i for i, n in enumerate(totals) if n >= 0.99 * target), None)
    hs = read_timeline(out).get("handshake", {})
    if hs:
        busy = [c for _, c, *_ in timeline_percentiles(hs)]
        summary["handshakes_per_s_client_side"] = {
            "mean_over_ramp": round(sum(busy) / max(1, len(busy))), "max_1s": max(busy)}
    if lo is not None and hi is not None and hi > lo:
        dt = samples[hi]["t"] - samples[lo]["t"]
        opened = totals[hi] - totals[lo]
        cpu = sum(samples[hi][f"edge_{e}_cpu_s"] - samples[lo][f"edge_{e}_cpu_s"] for e in edges)
        summary["ramp"] = {"seconds_1_to_99pct": round(dt, 1),
                           "handshakes_per_s": round(opened / dt),
                           "edge_cpu_s_per_1000_handshakes": round(cpu / opened * 1000, 3)}
    # memory: at the sample with the most connections
    i = max(range(len(samples)), key=lambda j: totals[j])
    s, n = samples[i], totals[i]
    if n < 1:
        return summary
    before = [x for j, x in enumerate(samples) if totals[j] < 0.01 * target
              and x["locust_rss_kib"] > 0 and j < i]
    lbase = before[-1]["locust_rss_kib"] if before else math.nan
    per_edge = {}
    for e in edges:
        ne = connections(s, base, e)
        rss = s[f"edge_{e}_rss_kib"] - base[f"edge_{e}_rss_kib"]
        per_edge[e] = {"pid": (meta.get("edge_pids") or [None] * 99)[int(e)],
                       "connections": int(ne), "rss_mib": round(s[f"edge_{e}_rss_kib"] / 1024, 1),
                       "rss_kib_per_connection": _r(rss / ne if ne else math.nan, 2)}
    summary["memory_at_peak"] = {
        "edges": per_edge,
        "edge_rss_kib_per_connection": _r(sum(
            s[f"edge_{e}_rss_kib"] - base[f"edge_{e}_rss_kib"] for e in edges) / n, 2),
        "redis_kib_per_connection": _r((s["redis_rss_kib"] - base["redis_rss_kib"]) / n, 2),
        "locust_rss_mib": _r(s["locust_rss_kib"] / 1024),
        "locust_kib_per_connection": _r((s["locust_rss_kib"] - lbase) / n, 2),
        "kernel_slab_kib_per_connection_both_ends": _r(
            (s["slab_kib"] - base["slab_kib"]) / n, 2),
    }
    return summary


# ------------------------------------------------------------------ plots


def plot(out: Path, scenario: str) -> list[Path]:
    """PNG plots of a run directory; returns the files written (none without matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples, counters, meta = read_samples(out), read_counters(out), read_meta(out)
    t0 = meta.get("locust_started") or (samples[0]["t"] if samples else 0.0)
    pids = meta.get("edge_pids") or []
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    def edge_label(e: str) -> str:
        return f"edge {e}" + (f" (pid {pids[int(e)]})" if int(e) < len(pids) else "")

    edges = edge_ids(samples)
    base = samples[0] if samples else {}
    xlabel = "seconds since Locust started"

    # connections over time
    fig, ax = plt.subplots(figsize=(8, 4.2))
    if samples:
        ts = [s["t"] - t0 for s in samples]
        for e in edges:
            ax.plot(ts, [connections(s, base, e) for s in samples], lw=1, label=edge_label(e))
        ax.plot(ts, [sum(connections(s, base, e) for e in edges) for s in samples], lw=2,
                label="all edges (agentia_connections gauges)")
    if counters:
        ct = [c["timestamp"] - t0 for c in counters]
        ax.plot(ct, [c["open"] for c in counters], "--", lw=1.5,
                label="open, Locust side (reported each second)")
        failed = [c["failed"] + c["dropped"] for c in counters]
        if max(failed) > 0:
            ax.plot(ct, failed, ":", color="red", label="failed handshakes + drops")
    for key in ("t_steady", "t_kill", "t_slow", "t_settle"):
        if meta.get("stream", {}).get(key):
            ax.axvline(meta["stream"][key] - t0, color="black", ls=":", lw=1)
            ax.annotate(key[2:], (meta["stream"][key] - t0, 1), fontsize=8, rotation=90,
                        xycoords=("data", "axes fraction"), va="top", ha="right")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("open connections")
    ax.set_title(f"{scenario}: connections over time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, "connections.png")

    # handshake latency percentiles over time, per second, and the handshake rate
    rows = timeline_percentiles(read_timeline(out).get("handshake", {}))
    if rows:
        fig, ax = plt.subplots(figsize=(8, 4.2))
        ts = [sec + 0.5 - t0 for sec, *_ in rows]
        for k, label in ((2, "p50"), (3, "p95"), (4, "p99")):
            ax.plot(ts, [r[k] for r in rows], marker=".", label=label)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("connect to welcome, ms (log)")
        ax2 = ax.twinx()
        ax2.bar(ts, [r[1] for r in rows], width=0.9, color="grey", alpha=0.25,
                label="handshakes completed per second")
        ax2.set_ylabel("handshakes/s")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.set_title(f"{scenario}: handshake latency percentiles, per second")
        ax.grid(alpha=0.3)
        save(fig, "handshake_latency.png")

    # edge memory per connection (when there are enough connections to say)
    peak = max((sum(connections(s, base, e) for e in edges) for s in samples), default=0)
    if samples and edges and peak >= 100:
        fig, ax = plt.subplots(figsize=(8, 4.2))
        ts = [s["t"] - t0 for s in samples]
        for e in edges:
            ys: list[float] = []
            recent: list[float] = []
            for s in samples:
                n = connections(s, base, e)
                rss = s[f"edge_{e}_rss_kib"] - base[f"edge_{e}_rss_kib"]
                # the gauge lags RSS by up to a second: only where the count has held for 2 s
                recent = [*recent[-3:], n]
                steady = n >= 100 and len(recent) == 4 and max(recent) - min(recent) <= 0.005 * n
                ys.append(rss / n if steady else math.nan)
            ax.plot(ts, ys, marker=".", ms=3,
                    label=f"{edge_label(e)}: RSS growth / connections (steady)")
        ax.set_ylim(bottom=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("KiB per connection")
        ax2 = ax.twinx()
        for e in edges:
            ax2.plot(ts, [s[f"edge_{e}_rss_kib"] / 1024 for s in samples], ":", alpha=0.7,
                     label=f"{edge_label(e)}: RSS, MiB")
        ax2.set_ylabel("RSS, MiB")
        ax2.set_ylim(bottom=0)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower right")
        ax.set_title(f"{scenario}: edge memory per connection")
        ax.grid(alpha=0.3)
        save(fig, "edge_memory.png")

    # turn latency distribution
    hists = read_histograms(out)
    cdf_plot(plt, save, hists, ("ack", "first_chunk", "full_turn"), "turn_latency.png",
             "ms from sending the turn (log)", "fraction of turns",
             f"{scenario}: turn latency distribution (CDF)")
    if scenario in ("reconnect", "slow"):
        from loadtest.locust.streamresults import plot_stream

        plot_stream(out, scenario, plt, save)
    return written
