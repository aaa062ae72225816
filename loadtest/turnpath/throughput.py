"""The turn path's throughput mode (``bench_turnpath --rate R1 --rate R2 ...``): of the rates
offered to one checkout, the highest one it sustained. Sustained: the load generator sent at
least 95 % of the rate over the sending time, every turn sent was acked and ended (none lost,
none refused), the ack p99 was at most ``ACK_P99_MS`` (issue 13) and the turn p99 at most
``TURN_P99_MS`` (a worker that falls behind grows a backlog: its turns' latency grows through
the run while the acks, the edge's and Redis's, stay quick)."""

from __future__ import annotations

from typing import Any

ACK_P99_MS = 50.0
TURN_P99_MS = 1000.0
KEPT_UP = 0.95


def sustained(run: dict[str, Any]) -> bool:
    """Whether one run at a fixed rate kept up (see the module's docstring)."""
    rate: float = run.get("rate") or 0.0
    return rate > 0 and run["sent"] >= KEPT_UP * rate * run["seconds"] \
        and run["lost"] == 0 and not run["errors"] and run["ended"] >= run["sent"] \
        and run["ack_p99_ms"] <= ACK_P99_MS and run["turn_p99_ms"] <= TURN_P99_MS


def best(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per checkout and sessions: the highest sustained rate, and per process the CPU-ms per
    turn at it (what the box would carry at 2 cores: ``turns_per_s_at_2_cores``)."""
    out = []
    for tree, n in dict.fromkeys((r["tree"], r["sessions"]) for r in runs if r.get("rate")):
        rs = [r for r in runs if (r["tree"], r["sessions"]) == (tree, n) and r.get("rate")]
        ok = [r for r in rs if sustained(r)]
        top = max(ok, key=lambda r: r["rate"]) if ok else None
        row: dict[str, Any] = {
            "tree": tree, "commit": rs[0]["commit"], "sessions": n,
            "offered": sorted({r["rate"] for r in rs}),
            "sustained": sorted({r["rate"] for r in ok}),
            "max_sustained_turns_per_s": top["rate"] if top else 0}
        if top is not None:
            cpu = {k.removesuffix("_cpu_ms_per_turn"): v for k, v in top.items()
                   if k.endswith("_cpu_ms_per_turn")}
            system = sum(v for k, v in cpu.items() if k != "loadgen")
            row.update(cpu_ms_per_turn=cpu, system_cpu_ms_per_turn=round(system, 3),
                       ack_p99_ms=top["ack_p99_ms"], machine_idle_share=top[
                           "machine_idle_share"],
                       turns_per_s_at_2_cores=round(2000 / system) if system > 0 else None)
        out.append(row)
    return out
