"""Smoke run of the Locust load suite (``loadtest/locust``): a small connection storm against
two SO_REUSEPORT edge processes, and a few chat turns through a worker, each through
``python -m loadtest.locust.run`` in its own process (Locust monkey-patches the standard
library with gevent, so it is never imported here). Judged from Locust's own CSV output."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest.locust.results import read_counters, read_failures, read_stats

ROOT = Path(__file__).resolve().parents[2]
PLOTS = importlib.util.find_spec("matplotlib") is not None

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                       reason="locust is not installed (pip install -e '.[load]')"),
]


def run(scenario: str, out: Path, *args: str, timeout: float = 50) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.locust.run", scenario, "--out", str(out), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for log in out.glob("*.log"):  # gateway, workers, Locust: never a traceback
        assert "Traceback" not in log.read_text(errors="replace"), log
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def test_storm_300_connections_over_two_edges(tmp_path: Path) -> None:
    out = tmp_path / "storm"
    summary = run("storm", out, "--connections", "300", "--batch", "100", "--rate", "600",
                  "--hold", "3", "--edges", "2", "--locust-processes", "1")
    stats = read_stats(out)
    assert stats["handshake"]["Request Count"] == 300
    assert stats["handshake"]["Failure Count"] == 0, read_failures(out)
    assert read_failures(out) == []
    assert max(c["open"] for c in read_counters(out)) == 300
    # both edge processes took connections, and they saw them all
    edges = summary["memory_at_peak"]["edges"]
    assert len(edges) == 2 and all(e["connections"] > 0 for e in edges.values()), edges
    assert summary["peak_open_edge_side"] == 300
    assert summary["edge_restarts"] == []
    assert (out / "report.html").stat().st_size > 0
    if PLOTS:
        for name in ("connections.png", "handshake_latency.png", "edge_memory.png"):
            assert (out / name).stat().st_size > 0, name


def test_chat_20_turns(tmp_path: Path) -> None:
    out = tmp_path / "chat"
    summary = run("chat", out, "--users", "5", "--rate", "10", "--turns", "20", "--seconds",
                  "15", "--edges", "2", "--workers", "1", "--word-delay", "0.005")
    stats = read_stats(out)
    for name in ("handshake", "ack", "first_delta", "full_turn"):
        assert stats[name]["Failure Count"] == 0, (name, read_failures(out))
    assert stats["ack"]["Request Count"] == 20
    assert stats["full_turn"]["Request Count"] == 20
    assert summary["turns_sent"] == summary["turns_completed"] == 20
    assert stats["ack"]["50%"] <= stats["first_delta"]["50%"] <= stats["full_turn"]["50%"]
    if PLOTS:
        assert (out / "turn_latency.png").stat().st_size > 0
