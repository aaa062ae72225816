"""bench_turnpath's command time: each command once, though Redis's INFO commandstats counts a
script's inner calls under their own names and again inside its ``evalsha``."""

from __future__ import annotations

from typing import Any

from loadtest.turnpath.figures import command_time, net_per_turn, wakeups_per_turn

# What Redis 7.0.15 reported (calls, usec) for one direct SET, then three EVALSHAs of a script
# that calls SET twice and INCR once (INFO's own line is left out by the stack's snapshot)
COMMANDSTATS = {"set": (7, 20), "incr": (3, 3), "evalsha": (3, 90), "script|load": (1, 38)}


def _run(turns_usec: dict[str, int]) -> dict[str, Any]:
    snap = {"cpu": {"redis": 0.01}, "cmds": {k: c for k, (c, _) in COMMANDSTATS.items()},
            "usec": turns_usec, "io": {}, "t": 1.0}
    idle = {"cpu": {"redis": 0.0}, "cmds": {}, "usec": {}, "io": {}, "t": 1.0}
    return {"idle": idle, "load": snap}


def test_a_scripts_inner_calls_are_counted_once() -> None:
    usec = {k: u for k, (_, u) in COMMANDSTATS.items()}
    # the SETs and the INCR once each, under their names; the scripts apart (their 90 µs hold
    # the inner calls' time again, plus Lua's own); the script's load is not the turn's work
    assert command_time(usec) == (23, 90)
    got = wakeups_per_turn(_run(usec), turns=1)
    assert got["redis_cmd_usec_per_turn"] == 23.0
    assert got["redis_script_usec_per_turn"] == 90.0
    assert "redis_cmd_usec_per_turn_no_scripts" not in got


def test_the_per_turn_figures_divide_by_the_turns() -> None:
    usec = {k: u * 10 for k, (_, u) in COMMANDSTATS.items()}
    got = net_per_turn(_run(usec), turns=10)
    assert (got["redis_cmd_usec_per_turn"], got["redis_script_usec_per_turn"]) == (23.0, 90.0)
    assert got["redis_cmd_usec_per_turn_by_name"]["evalsha"] == 90.0
