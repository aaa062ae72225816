"""The dashboard's key panels drawn with matplotlib from a run's scrapes
(``loadtest/render_dashboard.py`` runs the system and the load; this draws what it scraped)."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtest.promql import Scrape, pct, quantiles, rate_by, total, value

if TYPE_CHECKING:
    from loadtest.render_dashboard import Plan, Stats


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    return (f"{platform.node()}: {os.cpu_count()} x {cpu}{mem}, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def render(scrapes: list[Scrape], stats: Stats, plan: Plan, out: Path, wall0: float,
           wall1: float, command: str, rate_window: float, q_window: float,
           edges: int, workers: int, idle_timeout: float, scrape_every_s: float,
           ping_every_s: float) -> Path:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("render_dashboard needs matplotlib: .venv/bin/pip install matplotlib"
                         ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11.5, "axes.titleweight": "bold",
                         "legend.fontsize": 8.5, "axes.grid": True, "grid.alpha": 0.3})
    fig = plt.figure(figsize=(19, 17.5), dpi=100)
    gs = GridSpec(4, 6, figure=fig, hspace=0.62, wspace=0.55, top=0.895, bottom=0.085,
                  left=0.045, right=0.985)
    end_t = scrapes[-1].t if scrapes else plan.seconds
    palette = {"ok": "tab:green", "unauthorized": "tab:red", "forbidden": "tab:orange",
               "over_capacity": "tab:purple", "over_user_limit": "tab:brown",
               "over_socket_cap": "tab:pink", "failed": "tab:gray",
               "in": "tab:blue", "out": "tab:orange",
               "accepted": "tab:blue", "completed": "tab:green", "cancelled": "tab:gray",
               "attempt_failed": "tab:orange", "dead_lettered": "tab:red",
               "flood": "tab:red", "idle": "tab:olive", "slow": "tab:purple",
               "token_expired": "tab:brown", "edge": "tab:red"}

    def axis(row: int, col: int, span: int, title: str, expr: str, unit: str) -> Any:
        ax = fig.add_subplot(gs[row, col:col + span])
        ax.set_title(title, loc="left")
        ax.text(0, -0.22, expr, transform=ax.transAxes, fontsize=7.5, family="monospace",
                color="0.35", va="top")
        ax.set_xlim(0, end_t)
        ax.set_ylabel(unit)
        ax.set_xlabel("seconds since the load started", fontsize=8.5, color="0.3")
        return ax

    def nodata(ax: Any, why: str) -> None:
        ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", va="center",
                color="0.4", fontsize=10, style="italic")
        ax.set_ylim(0, 1)

    def counter_panel(ax: Any, name: str, by: str, scale: float = 1.0,
                      fmt: str = "{:.0f}") -> None:
        ts, series = rate_by(scrapes, name, by, rate_window)
        totals = total(scrapes, name, by)
        if not series:
            nodata(ax, f"no samples: {name} never incremented during the run")
            return
        for k in sorted(series):
            label = f"{k}  (total {fmt.format(totals.get(k, 0.0) * scale)})"
            ax.plot(ts, [v * scale for v in series[k]], label=label,
                    color=palette.get(k), lw=1.6, drawstyle="steps-post")
        top = max((v * scale for vs in series.values() for v in vs), default=0.0)
        ax.set_ylim(0, top * 1.35 or 1)  # headroom for the legend
        ax.legend(loc="best", framealpha=0.85)

    # Row 1: Connections
    ax = axis(0, 0, 2, "Open connections", "sum(agentia_connections)", "connections")
    ax.plot([s.t for s in scrapes],
            [sum(value(s, "agentia_connections").values()) for s in scrapes],
            label="agentia_connections (server)", color="tab:blue", lw=2)
    ax.plot([s.t for s in scrapes], [s.clients for s in scrapes],
            label="open on the client side", color="0.3", lw=1, ls="--")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower center", framealpha=0.85)

    ax = axis(0, 2, 2, "Handshakes by result",
              "sum by (result) (rate(agentia_handshakes_total[$__rate_interval]))", "per second")
    counter_panel(ax, "agentia_handshakes_total", "result")

    ax = axis(0, 4, 2, "Closes by the edge, by reason",
              "sum by (reason) (rate(agentia_closes_total[$__rate_interval]))", "per second")
    counter_panel(ax, "agentia_closes_total", "reason")

    # Row 2: Traffic
    ax = axis(1, 0, 3, "Frames",
              "sum by (direction) (rate(agentia_frames_total[$__rate_interval]))", "frames/s")
    counter_panel(ax, "agentia_frames_total", "direction")
    ax = axis(1, 3, 3, "Payload",
              "sum by (direction) (rate(agentia_bytes_total[$__rate_interval]))", "KiB/s")
    counter_panel(ax, "agentia_bytes_total", "direction", scale=1 / 1024, fmt="{:.0f} KiB")

    # Row 3: Turns
    ax = axis(2, 0, 2, "Turns by outcome",
              "sum by (outcome) (rate(agentia_turns_total[$__rate_interval]))", "turns/s")
    counter_panel(ax, "agentia_turns_total", "outcome")

    qs = (0.5, 0.95, 0.99)
    for col, (name, title, client) in enumerate((
            ("agentia_time_to_first_delta_seconds", "Time to first delta", stats.ttfd),
            ("agentia_turn_duration_seconds", "Full turn", stats.full))):
        ax = axis(2, 2 + 2 * col, 2, f"{title}: p50 / p95 / p99",
                  f"histogram_quantile(q, sum by (le) (rate({name}_bucket[5m])))\n"
                  f"(here over {q_window:.0f}s windows: the run is short)", "seconds")
        ts, qv = quantiles(scrapes, name, qs, q_window)
        if not ts or all(math.isnan(v) for v in qv[0.5]):
            nodata(ax, "no observations")
            continue
        for q, color in zip(qs, ("tab:green", "tab:orange", "tab:red"), strict=True):
            ax.plot(ts, qv[q], label=f"p{round(q * 100)} (server histogram)", color=color,
                    lw=1.8)
        if client:
            ax.axhline(pct(client, 0.5), color="tab:green", ls=":", lw=1,
                       label=f"p50 client-side, whole run: {pct(client, 0.5):.3f}s")
            ax.axhline(pct(client, 0.99), color="tab:red", ls=":", lw=1,
                       label=f"p99 client-side, whole run: {pct(client, 0.99):.3f}s")
        top = max((v for vs in qv.values() for v in vs if not math.isnan(v)), default=0.0)
        ax.set_ylim(0, top * 1.45 or 1)
        ax.legend(loc="upper right", framealpha=0.85)

    # Row 4: Bus
    ax = axis(3, 0, 3, "Inbound lag per shard (unread + pending turn entries)",
              "max by (shard) (agentia_inbound_lag)", "entries")
    shards = sorted({dict(lbl)["shard"] for s in scrapes
                     for lbl in value(s, "agentia_inbound_lag")}, key=int)
    if not shards:
        nodata(ax, "no samples: agentia_inbound_lag is set by the control plane only")
    for sh in shards:
        ax.plot([s.t for s in scrapes],
                [max(value(s, "agentia_inbound_lag", shard=sh).values(), default=math.nan)
                 for s in scrapes], label=f"shard {sh}", lw=1.3, drawstyle="steps-post")
    if shards:
        top = max((v for s in scrapes for v in value(s, "agentia_inbound_lag").values()),
                  default=0.0)
        ax.set_ylim(0, top * 1.4 or 1)
        ax.legend(loc="upper left", ncol=len(shards), framealpha=0.85, fontsize=8)

    ax = axis(3, 3, 3, "Redis errors by component",
              "sum by (component) (rate(agentia_redis_errors_total[$__rate_interval]))",
              "errors/s")
    counter_panel(ax, "agentia_redis_errors_total", "component")

    start = dt.datetime.fromtimestamp(wall0, dt.UTC)
    stop = dt.datetime.fromtimestamp(wall1, dt.UTC)
    fig.suptitle(
        f"Agentia dashboard (ops/grafana/agentia.json), rendered from a real run: "
        f"{start:%Y-%m-%d %H:%M:%S} to {stop:%H:%M:%S} UTC", fontsize=15, fontweight="bold",
        y=0.985)
    fig.text(0.5, 0.962,
             f"agentia up --edges {edges} --workers {workers} (demo model, private Redis, "
             f"AGENTIA_IDLE_TIMEOUT_S={idle_timeout:g});  /metrics of the control plane scraped "
             f"every {scrape_every_s:.0f}s; counter rates over {rate_window:.0f}s windows\n"
             f"load: {plan.connections} chat clients ramped over {plan.seconds * 0.4:.0f}s "
             f"(ping every {ping_every_s:.0f}s), ~{plan.turn_rate:g} turns/s; wrong and expired "
             f"tokens, another user's session, bad frames, {plan.flooders} flooding and "
             f"{plan.silent} silent clients; all clients leave at {plan.seconds:.0f}s",
             ha="center", va="top", fontsize=10)
    fig.text(0.5, 0.922,
             "Client side: "
             f"{stats.sent} turns sent, {stats.acks} acks, {stats.replies} replies; "
             f"refused handshakes {dict(sorted(stats.refused.items()))}; "
             f"closes seen {dict(sorted(stats.closes.items()))}; "
             f"errors {dict(sorted(stats.errors.items()))}",
             ha="center", fontsize=9.5)
    fig.text(0.01, 0.012, f"machine: {machine()}\ncommand: {command}", fontsize=9,
             family="monospace", va="bottom")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
