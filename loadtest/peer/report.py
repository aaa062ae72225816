"""The peer benchmark's results: medians over repeats, ratios Agentia / Centrifugo, and the
lines printed for a person."""

from __future__ import annotations

import statistics
from typing import Any


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Agentia / Centrifugo for each pair (above 1: Agentia uses more, or delivers more per
    core for ``frames_per_core_s``). The edge alone, and edge + redis-server."""
    out: dict[str, dict[str, float | None]] = {}
    for a in [k for k in results if k.startswith("agentia")]:
        for c in [k for k in results if k.startswith("centrifugo")]:
            ra, rc = results[a], results[c]

            def div(x: float | None, y: float | None) -> float | None:
                return round(x / y, 2) if x is not None and y else None

            both = {k: sum(v.values()) for k, v in (
                ("rss", ra["rss_kib_per_conn"]), ("hs", ra["cpu_s_per_1000_handshakes"]))}
            out[f"{a}/{c}"] = {
                "rss_per_conn_edge": div(ra["rss_kib_per_conn"]["server"],
                                         rc["rss_kib_per_conn"]["server"]),
                "rss_per_conn_edge_plus_redis": div(both["rss"],
                                                    rc["rss_kib_per_conn"]["server"]),
                "cpu_per_1000_handshakes_edge": div(ra["cpu_s_per_1000_handshakes"]["server"],
                                                    rc["cpu_s_per_1000_handshakes"]["server"]),
                "cpu_per_1000_handshakes_edge_plus_redis": div(
                    both["hs"], rc["cpu_s_per_1000_handshakes"]["server"]),
                "handshake_p50": div(ra["handshake_p50_ms"], rc["handshake_p50_ms"]),
                "handshake_p99": div(ra["handshake_p99_ms"], rc["handshake_p99_ms"]),
                "cpu_per_1000_keepalives": div(ra["cpu_s_per_1000_keepalives"]["server"],
                                               rc["cpu_s_per_1000_keepalives"]["server"]),
            }
            if "frames_per_core_s" in ra and "frames_per_core_s" in rc:
                out[f"{a}/{c}"].update({
                    "frames_per_core_s_edge": div(ra["frames_per_core_s"]["server"],
                                                  rc["frames_per_core_s"]["server"]),
                    "frames_per_core_s_edge_plus_redis": div(ra["frames_per_core_s_all"],
                                                             rc["frames_per_core_s_all"]),
                    "frames_per_core_s_edge_net": div(ra["frames_per_core_s_net"]["server"],
                                                      rc["frames_per_core_s_net"]["server"]),
                })
    return out


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Numbers: the median over repeats (nested dicts too); anything else: the last run's."""
    out: dict[str, Any] = {}
    for key, last in runs[-1].items():
        values = [r[key] for r in runs if key in r]
        if isinstance(last, dict) and key not in ("errors", "extra"):
            out[key] = median_of(values)
        elif isinstance(last, int | float) and not isinstance(last, bool) and all(
                isinstance(v, int | float) for v in values):
            m = statistics.median(values)
            out[key] = round(m, 4) if isinstance(m, float) else m
        else:
            out[key] = last
    return out




def format_one(kind: str, f: dict[str, Any]) -> str:
    lines = [f"  {f['connections']} connections ({f['failed']} failed {f['errors'] or ''}) in "
             f"{f['open_wall_s']} s; handshake p50 {f['handshake_p50_ms']} ms, "
             f"p99 {f['handshake_p99_ms']} ms",
             f"  CPU-s per 1000 handshakes {f['cpu_s_per_1000_handshakes']}",
             f"  RSS KiB per connection {f['rss_kib_per_conn']} (after storm "
             f"{f['rss_kib_per_conn_after_storm']}; after forced GC "
             f"{f.get('rss_kib_per_conn_after_forced_gc', '-')}); RSS MiB {f['rss_mib']}",
             f"  hold {f['hold_s']} s: {f['keepalives']} keepalives, CPU-s per 1000 "
             f"{f['cpu_s_per_1000_keepalives']}, dropped {f['dropped_in_hold']}"]
    if "go_runtime_per_conn" in f:
        lines.append(f"  Go runtime per connection: {f['go_runtime_per_conn']}")
    if "delivered" in f:
        lines.append(f"  fan-out: published {f['published']} ({f['published_per_s']}/s), "
                     f"delivered {f['delivered']} ({f['delivered_per_s']}/s); CPU-s per 1000 "
                     f"frames {f['cpu_s_per_1000_frames']}; frames per core-second "
                     f"{f['frames_per_core_s']} (all {f['frames_per_core_s_all']}; net of idle "
                     f"{f['frames_per_core_s_net']}); feeder CPU-s "
                     f"per 1000 {f['feeder_cpu_s_per_1000']}")
    return "\n".join(lines)


def format_ratios(rat: dict[str, dict[str, float | None]]) -> str:
    lines = ["== ratios Agentia / Centrifugo"]
    for pair, r in rat.items():
        lines.append(f"  {pair}: " + ", ".join(f"{k} {v}" for k, v in r.items()))
    return "\n".join(lines)
