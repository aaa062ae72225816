"""Smoke run of the attack benchmark (``loadtest/bench_attack.py``): two attacks, tiny, on
both transports against this checkout; judged from the record it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_bench_attack_records_every_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_attack", "--tree", str(ROOT), "--transport",
         "both", "--attacks", "app_ping_flood,many_sessions", "--conns", "2", "--seconds",
         "0.5", "--name", "attack-smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, "AGENTIA_RESULTS_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "attack-smoke.json").read_text())
    runs = doc["figures"]["runs"]
    assert {(r["attack"], r["transport"]) for r in runs} == {
        (a, t) for a in ("app_ping_flood", "many_sessions") for t in ("picows", "websockets")}
    for r in runs:
        assert r["frames"] > 0 and r["rss_before_mib"] > 0, r
        assert r["cpu_s"] >= 0 and r["tracebacks"] == 0, r
    sessions = [r for r in runs if r["attack"] == "many_sessions"]
    assert all(r["redis_kib_per_session"] > 0 for r in sessions), sessions
