"""The figures of one turn-path run (loadtest/bench_turnpath.py): CPU and Redis commands per
turn less the idle rates, redis-server's CPU a turn three ways, its event-loop work a turn, and
the latencies."""

from __future__ import annotations

from collections import Counter
from typing import Any

from loadtest.proc_stats import pct
from loadtest.turnpath.clients import Tally


def net_per_turn(run: dict[str, Any], turns: int) -> dict[str, Any]:
    """CPU-ms per turn of each process and Redis commands per turn, less the idle rate."""
    idle, load = run["idle"], run["load"]
    out: dict[str, Any] = {}
    for k, used in load["cpu"].items():
        if k == "redis_bare":  # no client: its whole CPU is idle (redis_totals)
            continue
        rate = idle["cpu"][k] / idle["t"]
        out[f"{k}_cpu_ms_per_turn"] = round((used - rate * load["t"]) / turns * 1e3, 3)
        out[f"{k}_idle_cores"] = round(rate, 4)
    out.update(redis_totals(run, turns))
    idle_cmds = sum(idle["cmds"].values()) / idle["t"]
    out["redis_cmds_per_turn"] = round(
        (sum(load["cmds"].values()) - idle_cmds * load["t"]) / turns, 1)
    out["redis_idle_cmds_per_s"] = round(idle_cmds, 1)
    top = Counter(load["cmds"]).most_common(40)
    out["redis_cmds_per_turn_by_name"] = {k: round(v / turns, 2) for k, v in top}
    # command time by name (INFO commandstats usec; a script's inner calls are in their own
    # names and in their evalsha's too: see command_time for the sum that counts them once)
    usec = Counter(load.get("usec", {})).most_common(24)
    out["redis_cmd_usec_per_turn_by_name"] = {k: round(v / turns, 1) for k, v in usec}
    out.update(wakeups_per_turn(run, turns))
    return out


def redis_totals(run: dict[str, Any], turns: int) -> dict[str, Any]:
    """redis-server's CPU a turn three ways (issue 13, session 17): ``total`` (everything it
    burnt over the load window), ``marginal`` (``redis_cpu_ms_per_turn``: less the rate the
    same stack burns idle, connected: serverCron plus the clients' polling) and ``over_bare``
    (less what a redis-server with no client at all burns in the same seconds: serverCron
    alone). The idle shares are costs per second, not per turn: per turn they shrink as the
    turn rate grows, so the total alone would overstate a busy shard's cost a turn and the
    marginal alone would hide what an idle one costs."""
    load, idle = run["load"], run["idle"]
    total = load["cpu"]["redis"] / turns * 1e3
    bare = load["cpu"].get("redis_bare", 0.0) / turns * 1e3
    stack_idle = idle["cpu"]["redis"] / idle["t"] * load["t"] / turns * 1e3
    return {"redis_cpu_ms_per_turn_total": round(total, 3),
            "redis_cpu_ms_per_turn_over_bare": round(total - bare, 3),
            "redis_bare_cpu_ms_per_turn": round(bare, 3),
            "redis_stack_idle_ms_per_turn": round(stack_idle, 3)}


def wakeups_per_turn(run: dict[str, Any], turns: int) -> dict[str, Any]:
    """Redis's event-loop work per turn, less the idle rate: client reads (a socket found
    readable: a request or a pipeline), reply writes, and the command time (commandstats usec,
    each command once: :func:`command_time`) against its whole CPU; the rest is the loop itself
    (syscalls, wake-ups, the AOF write of each loop that wrote)."""
    idle, load = run["idle"], run["load"]
    out: dict[str, Any] = {}
    for name, key in (("reads", "total_reads_processed"), ("writes", "total_writes_processed"),
                      ("connections", "total_connections_received")):
        if key in load.get("io", {}):
            rate = idle["io"][key] / idle["t"]
            out[f"redis_{name}_per_turn"] = round((load["io"][key] - rate * load["t"]) / turns, 1)
    commands, scripts = command_time(load.get("usec", {}))
    out["redis_cmd_usec_per_turn"] = round(commands / turns, 1)
    out["redis_script_usec_per_turn"] = round(scripts / turns, 1)
    return out


def command_time(usec: dict[str, int]) -> tuple[int, int]:
    """(the commands' time, each command once; the scripts' time, apart), µs, from INFO
    commandstats ``usec`` by name. Redis counts a script's inner calls under their own names
    and again inside the script's ``evalsha``: the sum over every name counted them twice (up
    to session 19's ``redis_cmd_usec_per_turn``; its ``_no_scripts`` is the first figure here).
    Each command is counted once under its own name, whether a client or a script called it;
    the scripts' time is reported apart, not added: it is their inner calls' (counted already)
    plus Lua's own, which commandstats does not split (Redis 7.0 has no per-caller count)."""
    commands = sum(v for k, v in usec.items() if k not in _OUTER)
    scripts = sum(v for k, v in usec.items() if k in _SCRIPTS)
    return commands, scripts


_SCRIPTS = ("evalsha", "eval", "fcall")
_OUTER = (*_SCRIPTS, "script|load", "info")


def latencies(t: Tally) -> dict[str, float]:
    ms = 1e3
    return {"ack_p50_ms": round(pct(t.acks, 50) * ms, 2),
            "ack_p99_ms": round(pct(t.acks, 99) * ms, 2),
            "turn_p50_ms": round(pct(t.turns, 50) * ms, 1),
            "turn_p99_ms": round(pct(t.turns, 99) * ms, 1),
            "first_text_p50_ms": round(pct(t.firsts, 50) * ms, 1)}
