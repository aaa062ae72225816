"""Smoke run of the peer benchmark (``loadtest/bench_peer.py``): a small storm, hold and
fan-out against a real Agentia edge (picows) on a real Redis, and against a real Centrifugo
when its binary is there (it is never built here: ``go install`` takes minutes). Judged from
the benchmark's own JSON: every connection opened, kept alive, and every event delivered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest.peer.servers import find_centrifugo

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def run(tmp_path: Path, servers: str) -> dict[str, Any]:
    out = tmp_path / "peer.json"
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_peer", "--servers", servers,
         "--connections", "200", "--clients", "2", "--hold", "9", "--heartbeat", "4",
         "--rate", "2000", "--seconds", "1", "--batch", "50", "--no-build", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def check(fig: dict[str, Any]) -> None:
    assert fig["connections"] == 200 and fig["failed"] == 0, fig["errors"]
    assert fig["dropped_in_hold"] == 0 and fig["dropped_after_fanout"] == 0
    # two keepalive periods or more each (Centrifugo's pong timeout is half a period: 2 s,
    # so a loaded machine does not drop connections); at least one per connection counted
    assert fig["keepalives"] >= 200, fig
    assert fig["published"] >= 1000
    assert fig["delivered"] == fig["published"], fig
    assert fig["cpu_s_per_1000_frames"]["server"] > 0
    assert fig["rss_kib_per_conn"]["server"] > 0


CENTRIFUGO = find_centrifugo() is not None


@pytest.mark.skipif(CENTRIFUGO, reason="covered by test_centrifugo_beside_agentia")
def test_agentia_edge(tmp_path: Path) -> None:
    res = run(tmp_path, "agentia-picows")
    fig = res["servers"]["agentia-picows"]
    check(fig)
    assert fig["cpu_s_per_1000_handshakes"]["redis"] >= 0  # redis measured beside the edge


@pytest.mark.skipif(not CENTRIFUGO,
                    reason="no centrifugo binary (go install "
                           "github.com/centrifugal/centrifugo/v6@v6.9.1)")
def test_centrifugo_beside_agentia(tmp_path: Path) -> None:
    res = run(tmp_path, "agentia-picows,centrifugo")
    check(res["servers"]["agentia-picows"])
    check(res["servers"]["centrifugo"])
    assert res["servers"]["centrifugo"]["go_runtime_per_conn"]["goroutines"] > 0
    ratio = res["ratios"]["agentia-picows/centrifugo"]
    assert ratio["rss_per_conn_edge"] is not None and ratio["rss_per_conn_edge"] > 0
