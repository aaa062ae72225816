"""The capacity model reads recorded benchmark results (never constants) and scales sanely."""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from loadtest.capacity import add_arguments, compute, run
from loadtest.capacity_figures import CapacityError, MissingResult
from loadtest.record import ROOT, record

RESULTS: dict[str, dict[str, Any]] = {
    "core-idle": {"edge_rss_kib_per_conn": 16.0, "kernel_slab_kib_per_conn_both_ends": 10.0,
                  "edge_cpu_s_per_1000": 0.5, "edge_cpu_s_per_1000_pings": 0.04},
    "core-turns-w1": {"summary": {"edge_cpu_s_per_turn": 0.002, "workers_cpu_s_per_turn": 0.006,
                                  "redis_cpu_s_per_turn": 0.00092,  # 2x the bus replay's
                                  "deltas_per_turn": 1.0, "reply_words_per_turn": 30.0}},
    "core-turns-w1-streamed": {"summary": {"edge_cpu_s_per_turn": 0.008,
                                           "workers_cpu_s_per_turn": 0.03,
                                           "redis_cpu_s_per_turn": 0.0064,  # 1x
                                           "deltas_per_turn": 100.0,
                                           "reply_words_per_turn": 130.0}},
    "core-turns-w1-streamed-fast": {"summary": {"edge_cpu_s_per_turn": 0.005,
                                                "workers_cpu_s_per_turn": 0.02,
                                                "deltas_per_turn": 30.0,
                                                "reply_words_per_turn": 130.0}},
    "redis-shard": {
        "idle": {"redis_cpu_s_per_1000_opens": 0.04, "redis_bytes_per_idle_session": 600},
        "fit": {"redis_cpu_s_per_turn_base": 4e-4, "redis_cpu_s_per_delta": 6e-5,
                "redis_cpu_s_per_reply_char": 1e-8, "commands_per_turn_base": 65.0,
                "commands_per_delta": 12.0, "log_bytes_base": 700.0, "log_bytes_per_delta": 190.0,
                "log_bytes_per_reply_char": 2.4, "memory_bytes_base": 200.0,
                "memory_bytes_per_reply_char": 1.0, "log_events_base": 3.0,
                "log_events_per_delta": 1.0, "delivery_bytes_base": 900.0,
                "delivery_bytes_per_delta": 100.0, "delivery_bytes_per_reply_char": 1.5}},
}

# the same bus replayed with reply pieces as chunks (off the log), and the replay of the log
# deltas kept beside it as redis-shard-before, as bench_redis records them side by side
CHUNKS: dict[str, dict[str, Any]] = {
    **copy.deepcopy(RESULTS),
    "redis-shard": {
        "reply_path": "chunks",
        "idle": {"redis_cpu_s_per_1000_opens": 0.04, "redis_bytes_per_idle_session": 600},
        "fit": {"redis_cpu_s_per_turn_base": 3e-4, "redis_cpu_s_per_delta": 1.5e-5,
                "redis_cpu_s_per_reply_char": 1e-8, "commands_per_turn_base": 60.0,
                "commands_per_delta": 2.0, "log_bytes_base": 400.0, "log_bytes_per_delta": 0.0,
                "log_bytes_per_reply_char": 1.2, "memory_bytes_base": 200.0,
                "memory_bytes_per_reply_char": 1.0, "log_events_base": 3.0,
                "log_events_per_delta": 0.0, "delivery_bytes_base": 800.0,
                "delivery_bytes_per_delta": 90.0, "delivery_bytes_per_reply_char": 1.2}},
    "redis-shard-before": {"reply_path": "log deltas", **copy.deepcopy(RESULTS["redis-shard"])},
}


def write(tmp: Path, results: dict[str, dict[str, Any]] = RESULTS) -> Path:
    for name, figures in results.items():
        record(name, figures, results_dir=tmp, command="test")
    return tmp


def args(tmp: Path, *extra: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(["--results-dir", str(tmp), *extra])


def quantity(res: dict[str, Any], part: str, starts: str) -> float:
    return float(next(ln["quantity"] for ln in res["parts"][part]
                      if ln["what"].startswith(starts)))


def test_figures_come_from_the_result_files(tmp_path: Path) -> None:
    res = compute(args(write(tmp_path)))
    used = res["figures"]
    assert used["worker_turn_cpu"]["kind"] == "measured"
    assert used["worker_turn_cpu"]["value"] == 0.006
    assert str(tmp_path / "core-turns-w1.json") in used["worker_turn_cpu"]["where"]
    assert str(tmp_path / "redis-shard.json") in used["redis_session_b"]["where"]
    assert used["gpu_tps"]["kind"] == "input"


def test_changing_a_recorded_figure_changes_the_answer_proportionally(tmp_path: Path) -> None:
    # concurrency high enough that workers are CPU-bound: their count follows the CPU that
    # both turns benchmarks (plain and streamed) recorded
    base = compute(args(write(tmp_path / "a"), "--worker-concurrency", "100000"))
    changed = copy.deepcopy(RESULTS)
    changed["core-turns-w1"]["summary"]["workers_cpu_s_per_turn"] = 0.012
    changed["core-turns-w1-streamed"]["summary"]["workers_cpu_s_per_turn"] = 0.06
    changed["core-turns-w1-streamed-fast"]["summary"]["workers_cpu_s_per_turn"] = 0.04
    doubled = compute(args(write(tmp_path / "b", changed), "--worker-concurrency", "100000"))
    w0 = quantity(base, "turns", "worker processes")
    w1 = quantity(doubled, "turns", "worker processes")
    assert w0 > 100
    assert abs(w1 - 2 * w0) <= 1
    # and the Redis memory per session drives the sessions' shards
    changed = copy.deepcopy(RESULTS)
    changed["redis-shard"]["idle"]["redis_bytes_per_idle_session"] = 6000
    more = compute(args(write(tmp_path / "c", changed)))
    s0 = quantity(base, "connections", "Redis shards")
    added = 10_000_000 * (6000 - 600) / (16 * 2**30 * 0.7)  # 16 GiB shards, 70% full
    assert quantity(more, "connections", "Redis shards") == pytest.approx(s0 + added, abs=0.01)


def test_redis_turn_cpu_is_the_bus_replay_scaled_to_the_whole_system(tmp_path: Path) -> None:
    res = compute(args(write(tmp_path)))
    deltas, chars = res["load"]["deltas"], res["load"]["reply_chars"]
    per_turn = (4e-4 + deltas * 6e-5 + chars * 1e-8) * 1.5  # ratios 2 and 1: mean 1.5
    kept = 10_000_000 * 20 * (700 + 190 * deltas + 2.4 * chars + 200 + chars)  # logs, memory
    want = max(10_000_000 / 60 * per_turn / 0.7, kept / (16 * 2**30 * 0.7))
    assert quantity(res, "turns", "Redis shards") == pytest.approx(want, abs=0.01)


def test_chunks_off_the_log_cost_what_their_replay_measured(tmp_path: Path) -> None:
    """With chunks the replay's own figures give CPU, commands and log bytes; the whole
    system's ratio is still taken against the replay of the path the turns benchmarks ran
    (log deltas, from redis-shard-before: ratios 2 and 1 as above)."""
    res = compute(args(write(tmp_path, CHUNKS)))
    deltas, chars = res["load"]["deltas"], res["load"]["reply_chars"]
    fit = CHUNKS["redis-shard"]["fit"]
    per_turn = (fit["redis_cpu_s_per_turn_base"] + deltas * fit["redis_cpu_s_per_delta"]
                + chars * fit["redis_cpu_s_per_reply_char"]) * 1.5
    kept = 10_000_000 * 20 * (400 + 1.2 * chars + 200 + chars)
    want = max(10_000_000 / 60 * per_turn / 0.7, kept / (16 * 2**30 * 0.7))
    assert quantity(res, "turns", "Redis shards") == pytest.approx(want, abs=0.01)
    assert f"{10_000_000 / 60 * (60 + 2 * deltas):,.0f} bus commands/s" in next(
        ln["note"] for ln in res["parts"]["turns"] if ln["what"].startswith("Redis shards"))
    # without the replay of log deltas the ratio is against the chunk replay itself
    alone = {k: v for k, v in CHUNKS.items() if k != "redis-shard-before"}
    res = compute(args(write(tmp_path / "alone", alone)))
    replay = [fit["redis_cpu_s_per_turn_base"] + d * fit["redis_cpu_s_per_delta"]
              for d in (1.0, 100.0)]
    calib = (0.00092 / replay[0] + 0.0064 / replay[1]) / 2
    assert quantity(res, "turns", "Redis shards") == pytest.approx(
        10_000_000 / 60 * per_turn / 1.5 * calib / 0.7, abs=0.01)


def test_a_log_holds_turns_by_its_events_per_turn(tmp_path: Path) -> None:
    """LOG_MAXLEN caps the turns a log keeps: 3 + deltas events each with log deltas, 3 with
    chunks; the delivery streams hold DELIVERY_MAXLEN entries of the measured size."""
    from sessions import keys as K

    for results, events_per_delta in ((RESULTS, 1.0), (CHUNKS, 0.0)):
        d = write(tmp_path / str(events_per_delta), results)
        res = compute(args(d, "--turns-per-session", "100000"))
        deltas, chars = res["load"]["deltas"], res["load"]["reply_chars"]
        fit = results["redis-shard"]["fit"]
        in_log = K.LOG_MAXLEN / (3 + events_per_delta * deltas)
        log_b = (fit["log_bytes_base"] + deltas * fit["log_bytes_per_delta"]
                 + chars * fit["log_bytes_per_reply_char"])
        mem = 10_000_000 * (in_log * log_b + K.MEMORY_MAXLEN / 2 * (200 + chars))
        note = next(ln["note"] for ln in res["parts"]["turns"]
                    if ln["what"].startswith("Redis shards"))
        assert f"{mem / 2**30:,.0f} GiB of logs and memory" in note
        entry = (fit["delivery_bytes_base"] + deltas * fit["delivery_bytes_per_delta"]
                 + chars * fit["delivery_bytes_per_reply_char"]) / (deltas + 3)
        procs = quantity(res, "connections", "edge processes")
        delivery = procs * K.DELIVERY_MAXLEN * entry
        note = next(ln["note"] for ln in res["parts"]["connections"]
                    if ln["what"].startswith("Redis shards"))
        assert f"{delivery / 2**30:,.0f} GiB of delivery streams" in note


def test_a_missing_result_names_the_benchmark_to_run(tmp_path: Path, capsys: Any) -> None:
    partial = {k: v for k, v in RESULTS.items() if k != "redis-shard"}
    a = args(write(tmp_path, partial))
    with pytest.raises(MissingResult, match=r"redis-shard\.json.*python -m loadtest\.bench_redis"):
        compute(a)
    assert run(a) == 2
    assert "run: python -m loadtest.bench_redis --record" in capsys.readouterr().err


def test_a_result_without_the_needed_figure_is_missing(tmp_path: Path) -> None:
    broken = copy.deepcopy(RESULTS)
    del broken["core-idle"]["edge_cpu_s_per_1000_pings"]
    with pytest.raises(MissingResult, match="bench_core idle"):
        compute(args(write(tmp_path, broken)))


def test_unusable_inputs_and_prices_are_refused_clearly(tmp_path: Path) -> None:
    d = write(tmp_path / "results")
    with pytest.raises(CapacityError, match="--tokens-per-s-per-gpu, --voice-share"):
        compute(args(d, "--tokens-per-s-per-gpu", "0", "--voice-share", "1.5"))
    prices = tmp_path / "prices.toml"
    prices.write_text("[edge_box]\nvcpus = 16\n")
    with pytest.raises(MissingResult, match=r"prices\.toml has no \[edge_box\] mem_gib"):
        compute(args(d, "--prices", str(prices)))
    prices.write_text("not toml [")
    with pytest.raises(CapacityError, match="cannot read the price table"):
        compute(args(d, "--prices", str(prices)))


def test_users_doubling_roughly_doubles_edges(tmp_path: Path) -> None:
    d = write(tmp_path)
    one = compute(args(d, "--users", "5000000"))
    two = compute(args(d, "--users", "10000000"))
    b1, b2 = (quantity(r, "connections", "edge boxes") for r in (one, two))
    assert b1 >= 5
    assert 2 * b1 - 1 <= b2 <= 2 * b1 + 1


def test_deltas_and_words_cost_workers_the_measured_slopes(tmp_path: Path) -> None:
    """Per delta: streamed minus fast-streamed (same words); per word: the rest of streamed
    minus plain. Fewer deltas (a longer coalescing window) save only the per-delta part."""
    d = write(tmp_path)
    per_delta = (0.03 - 0.02) / (100 - 30)
    per_word = (0.03 - 0.006 - per_delta * (100 - 1)) / (130 - 30)
    rate = 10_000_000 / 60
    for tokens, coalesce, deltas in (("25", "40", 13), ("25", "200", 3), ("230", "40", 115)):
        # streaming at 50 tokens/s: 25 tokens take 0.5 s, 230 take 4.6 s
        res = compute(args(d, "--worker-concurrency", "100000", "--reply-tokens", tokens,
                           "--coalesce-ms", coalesce))
        assert res["load"]["deltas"] == deltas
        want = rate * (0.006 + (deltas - 1) * per_delta
                       + max(0, float(tokens) - 30) * per_word) / 0.7
        assert quantity(res, "turns", "worker processes") == pytest.approx(want, abs=1)


def test_a_newer_worker_figure_replaces_the_plain_turn_only(tmp_path: Path) -> None:
    """bench_worker's demo turn (worker-cpu.json) is the worker's plain turn when recorded;
    the turns benchmarks still give the costs per delta and per word."""
    base = compute(args(write(tmp_path / "a"), "--worker-concurrency", "100000"))
    newer = {**RESULTS, "worker-cpu": {"runs": [], "summary": {
        "demo_worker_cpu_s_per_turn": 0.002}}}
    res = compute(args(write(tmp_path / "b", newer), "--worker-concurrency", "100000"))
    assert res["figures"]["worker_turn_cpu_now"]["value"] == 0.002
    rate = 10_000_000 / 60
    saved = rate * (0.006 - 0.002) / 0.7  # the plain turn's CPU at 70 % utilisation
    w0, w1 = (quantity(r, "turns", "worker processes") for r in (base, res))
    assert w0 - w1 == pytest.approx(saved, abs=2)
    assert "worker_turn_cpu_now" not in base["figures"]


def test_a_streamed_token_figure_replaces_the_demo_models_slopes(tmp_path: Path) -> None:
    """bench_worker's CPU per streamed token of an OpenAI-compatible model
    (worker-stream-inflight.json), when recorded, is the worker's cost per reply token: the
    plain turn plus it times the tokens; the demo model's per-delta and per-word slopes are not
    used for the worker (the edge keeps them)."""
    streamed = {**RESULTS, "worker-stream-inflight": {"runs": [], "summary": {
        "worker_cpu_s_per_token": 20e-6}}}
    res = compute(args(write(tmp_path, streamed), "--worker-concurrency", "100000",
                       "--reply-tokens", "300"))
    assert res["figures"]["worker_token_cpu_stream"]["value"] == 20e-6
    rate = 10_000_000 / 60
    want = rate * (0.006 + 300 * 20e-6) / 0.7
    assert quantity(res, "turns", "worker processes") == pytest.approx(want, abs=1)
    base = compute(args(write(tmp_path / "a"), "--worker-concurrency", "100000"))
    assert "worker_token_cpu_stream" not in base["figures"]


def test_gpus_scale_with_turns_times_tokens(tmp_path: Path) -> None:
    d = write(tmp_path)
    base = quantity(compute(args(d)), "model", "GPUs")
    more_turns = quantity(compute(args(d, "--turns-per-user-per-min", "2")), "model", "GPUs")
    more_tokens = quantity(compute(args(d, "--reply-tokens", "600")), "model", "GPUs")
    faster_gpu = quantity(compute(args(d, "--tokens-per-s-per-gpu", "5000")), "model", "GPUs")
    assert base == pytest.approx(10_000_000 / 60 * 300 / 2500, abs=1)
    assert more_turns == pytest.approx(2 * base, abs=1)
    assert more_tokens == pytest.approx(2 * base, abs=1)
    assert faster_gpu == pytest.approx(base / 2, abs=1)


def test_voice_needs_a_result_or_an_explicit_input(tmp_path: Path) -> None:
    d = write(tmp_path)
    with pytest.raises(MissingResult, match="no recorded voice result"):
        compute(args(d, "--voice-share", "0.1"))
    res = compute(args(d, "--voice-share", "0.1", "--calls-per-voice-worker", "4"))
    assert res["figures"]["voice_calls"]["kind"] == "input"
    assert "NOT measured" in res["figures"]["voice_calls"]["label"]
    assert quantity(res, "voice", "voice workers") == 250_000
    record("voice-capacity", {"calls_per_voice_worker": 5}, results_dir=d, command="test")
    res = compute(args(d, "--voice-share", "0.1", "--calls-per-voice-worker", "4"))
    assert res["figures"]["voice_calls"]["kind"] == "measured"
    assert quantity(res, "voice", "voice workers") == 200_000


def test_a_voice_result_that_met_no_bound_is_said_not_used(tmp_path: Path) -> None:
    d = write(tmp_path)
    record("voice-latency", {"calls_per_voice_worker": None, "p95_limit_ms": 900.0},
           results_dir=d, command="test")
    with pytest.raises(MissingResult, match=r"met the p95 bound of 900 ms at no level .*"
                                            r"--calls-per-voice-worker"):
        compute(args(d, "--voice-share", "0.1"))
    res = compute(args(d, "--voice-share", "0.1", "--calls-per-voice-worker", "4"))
    assert res["figures"]["voice_calls"]["kind"] == "input"
    assert "met the p95 bound at no level" in res["figures"]["voice_calls"]["label"]
    assert quantity(res, "voice", "voice workers") == 250_000


def test_the_committed_results_are_complete_for_the_model() -> None:
    """The real CLI against loadtest/results/ as committed: every figure is there."""
    cmd = [sys.executable, "-m", "launch.cli", "capacity", "--users", "10000000",
           "--voice-share", "0.05", "--calls-per-voice-worker", "3", "--json"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    res = orjson.loads(out.stdout)
    measured = {k for k, f in res["figures"].items() if f["kind"] == "measured"}
    assert {"edge_rss_kib", "worker_turn_cpu", "redis_turn_cpu", "log_b"} <= measured
    assert all(str(ROOT / "loadtest" / "results") in res["figures"][k]["where"]
               for k in measured)
    assert res["total_usd_month"] > 0
