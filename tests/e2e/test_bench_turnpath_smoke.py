"""Smoke run of the turn-path benchmark (``loadtest/bench_turnpath.py``): both profiles, a few
sessions for a second or two against this checkout; judged from the record it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_bench_turnpath_records_every_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_turnpath", "--tree", str(ROOT), "--sessions", "3",
         "--seconds", "1.5", "--idle", "0.3", "--grace", "10", "--long-words", "60",
         "--long-word-delay", "0.005", "--short-word-delay", "0.005", "--log-sample", "3",
         "--record", "turnpath-smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL,
        env={**os.environ, "AGENTIA_RESULTS_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "turnpath-smoke.json").read_text())
    runs = {r["profile"]: r for r in doc["figures"]["runs"]}
    assert set(runs) == {"long", "short"}
    for r in runs.values():
        assert r["ended"] > 0 and r["lost"] == 0 and r["ended"] == r["acked"], r
        assert r["tracebacks"] == {"edge": 0, "worker": 0}, r
        assert r["text_frames_per_turn"] >= 1 and r["redis_cmds_per_text_frame"] > 0, r
        # the worker's CPU per turn is its load CPU less its idle rate over 0.3 s (one or two
        # 10 ms ticks): on a busy box that can come out below zero, so only its presence is
        # checked (the throughput test below says the same of every process)
        assert r["redis_cmds_per_turn"] > 0 and isinstance(r["worker_cpu_ms_per_turn"], float), r
        log = r["log"]
        assert log["finished_turns"] > 0, log
        # the log holds at least each finished reply's text
        assert log["bytes_per_turn"] > log["reply_chars_per_turn"] > 0, log
    # the long profile's replies quote its 60-word text, the short one's two words
    assert runs["long"]["reply_words_per_turn"] == 60 > runs["short"]["reply_words_per_turn"]
    assert {(s["profile"], s["rounds"]) for s in doc["figures"]["summary"]} == {
        ("long", 1), ("short", 1)}


def test_bench_turnpath_throughput_mode_records_each_rate(tmp_path: Path) -> None:
    """``--rate`` twice, two edges and two workers: one run per rate, every turn sent ended,
    the load generator's CPU measured, and the throughput summary of the rates offered."""
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_turnpath", "--tree", str(ROOT), "--sessions", "4",
         "--profiles", "short", "--rate", "8", "--rate", "16", "--seconds", "1.5", "--idle",
         "0.3", "--grace", "10", "--short-word-delay", "0", "--log-sample", "2", "--edges", "2",
         "--workers", "2", "--record", "turnpath-rate-smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, "AGENTIA_RESULTS_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    figs = json.loads((tmp_path / "turnpath-rate-smoke.json").read_text())["figures"]
    runs = {r["rate"]: r for r in figs["runs"]}
    assert set(runs) == {8.0, 16.0}
    assert 0 < runs[8.0]["sent"] < runs[16.0]["sent"] <= 16 * 1.5 + 1
    for r in runs.values():
        assert r["ended"] == r["sent"] == r["acked"], r
        assert r["lost"] == 0 and not r["errors"], r
        assert r["edges"] == r["workers"] == 2 and r["tracebacks"] == {"edge": 0, "worker": 0}
        # each process's CPU per turn is its load CPU less its idle rate over 0.3 s, which on a
        # busy box is noise (the load generator's came out at -0.8 ms in a CI run): only that
        # the figures are there is checked
        assert isinstance(r["loadgen_cpu_ms_per_turn"], float) and "edge_cpu_ms_per_turn" in r, r
    (row,) = figs["throughput"]
    assert row["offered"] == [8.0, 16.0] and row["sessions"] == 4
    assert set(row["sustained"]) <= {8.0, 16.0}
    assert {(s["rate"], s["rounds"]) for s in figs["summary"]} == {(8.0, 1), (16.0, 1)}
