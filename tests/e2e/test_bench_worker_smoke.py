"""Smoke run of the worker benchmark (``loadtest/bench_worker.py``): both modes, tiny, against
this checkout, with the stub as the model (the demo model runs in every other worker test);
judged from the records it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_bench_worker_records_both_modes(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_worker", "--modes", "cpu,inflight",
         "--sessions", "4", "--turns", "2", "--idle", "0.3", "--cpu-models", "stub",
         "--cpu-reply-tokens", "10", "--streams", "8",
         "--seconds", "3", "--grace", "10", "--reply-tokens", "12", "--tokens-per-s", "100",
         "--record", "--name", "smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, "AGENTIA_RESULTS_DIR": str(tmp_path), "PYTHONPATH": str(ROOT),
             "AGENTIA_MODEL_READ_MS": "7", "AGENTIA_JWT_SECRET": "not-in-the-record"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    cpu = json.loads((tmp_path / "smoke-cpu.json").read_text())["figures"]["runs"]
    assert [r["model"] for r in cpu] == ["stub"], cpu
    for r in cpu:
        assert r["replies"] == 8 and r["unfinished"] == 0, r
        assert r["worker_cpu_ms_per_turn"] > 0 and r["tracebacks"] == 0, r
        assert 0 <= r["machine_idle_share"] <= 1, r  # how busy the machine was
        # what the worker ran under is in the record, a secret's value is not
        env = r["worker_env"]
        assert env["AGENTIA_MODEL_READ_MS"] == "7" and env["AGENTIA_DEMO_WORD_DELAY"] == "0", env
        assert env["AGENTIA_JWT_SECRET"] == "(set)", env
    runs = json.loads((tmp_path / "smoke-inflight.json").read_text())["figures"]["runs"]
    assert [r["streams"] for r in runs] == [8], runs
    for r in runs:
        # every session had a turn running at once, and every turn that started ended
        assert r["max_in_flight"] == r["streams"] and r["unfinished"] == 0, r
        assert r["replies"] >= r["streams"] and r["turn_errors"] == 0, r
        assert 0 < r["first_text_ms_p50"] <= r["first_text_ms_p99"], r
        assert r["worker_cores_steady"] > 0 and r["tracebacks"] == 0, r
        assert 0 <= r["machine_idle_share"] <= 1, r


def test_bench_worker_refuses_more_turns_than_a_session_may_queue() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_worker", "--modes", "cpu", "--turns", "101"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--turns must be 1-100" in proc.stderr and "Traceback" not in proc.stderr
