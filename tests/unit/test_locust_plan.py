"""loadtest/locust/plan.py: a Locust run's shape from its command line, without starting
anything (Locust itself is never imported here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loadtest.locust.plan import MAX_SOCKETS_PER_LOCUST_PROCESS, environment, plan
from loadtest.locust.run import parser

OUT = Path("/tmp/never-written")


def test_a_storm_opens_whole_batches_over_enough_processes() -> None:
    a = parser().parse_args(["storm", "--connections", "1234", "--batch", "500",
                             "--rate", "100", "--hold", "5"])
    p = plan(a, OUT)
    assert p.target == 1236 and p.meta["batch"] == 412  # 3 equal batches cover 1234
    assert p.processes == 1 and p.timeout == 3 * 1236 / 100 + 150 + 5
    assert p.extra[:2] == ["--ws-connections", "1234"] and p.extra[-2:] == ["--ws-hold", "5.0"]
    assert plan(parser().parse_args(["storm", "--connections", "25000"]), OUT).processes == 3


def test_too_many_sockets_per_locust_process_is_refused() -> None:
    n = 2 * MAX_SOCKETS_PER_LOCUST_PROCESS
    a = parser().parse_args(["storm", "--connections", str(n), "--locust-processes", "1"])
    with pytest.raises(SystemExit, match="add processes"):
        plan(a, OUT)


def test_a_stream_scenario_gets_fresh_sessions_and_a_bounded_run() -> None:
    a = parser().parse_args(["reconnect", "--connections", "200", "--locust-args",
                             "--ws-token-in query"])
    p = plan(a, OUT)
    b = parser().parse_args(["reconnect", "--connections", "200"])
    assert a.session_prefix.startswith("reconnect-")
    assert plan(b, OUT).meta["session_prefix"] != a.session_prefix
    opts = dict(zip(p.extra[::2], p.extra[1::2], strict=False))
    assert float(opts["--ws-max-seconds"]) == p.timeout > 3 * 200 / 1000 + 150
    assert opts["--ws-control"] == str(OUT) and p.meta["kill_edge"] == 0
    assert p.extra[-2:] == ["--ws-token-in", "query"]


def test_chat_and_its_environment() -> None:
    a = parser().parse_args(["chat", "--users", "7", "--seconds", "10", "--env",
                             "AGENTIA_X=1", "--env", "AGENTIA_LOG_LEVEL=debug"])
    p = plan(a, OUT)
    assert (p.target, p.processes, p.timeout) == (0, 1, 10 + 30 + 120)
    assert p.meta["users"] == 7 and "--ws-chat-users" in p.extra
    env = environment(a, {"OPENAI_API_KEY": "sk-secret", "PATH": "/bin"})
    assert "OPENAI_API_KEY" not in env and env["PATH"] == "/bin"
    assert env["AGENTIA_X"] == "1" and env["AGENTIA_LOG_LEVEL"] == "debug"  # --env wins
    assert env["AGENTIA_DEV"] == "true" and "locust" not in sys.modules
