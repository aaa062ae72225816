"""The turn path's throughput mode (loadtest/turnpath/throughput.py) picks the highest rate
that kept up, and says why a rate did not."""

from __future__ import annotations

from typing import Any

from loadtest.turnpath.throughput import best, sustained


def _run(rate: float, **over: Any) -> dict[str, Any]:
    run = {"tree": "/t", "commit": "abc", "sessions": 100, "rate": rate, "seconds": 10.0,
           "sent": int(rate * 10), "ended": int(rate * 10), "lost": 0, "errors": {},
           "ack_p99_ms": 20.0, "turn_p99_ms": 300.0, "turns_per_s": rate,
           "machine_idle_share": 0.5, "edge_cpu_ms_per_turn": 0.5,
           "worker_cpu_ms_per_turn": 1.5, "redis_cpu_ms_per_turn": 0.5,
           "loadgen_cpu_ms_per_turn": 0.4}
    return {**run, **over}


def test_a_run_that_kept_up_is_sustained() -> None:
    assert sustained(_run(300))
    assert not sustained(_run(300, lost=1))
    assert not sustained(_run(300, ended=2999))  # one turn never ended
    assert not sustained(_run(300, ack_p99_ms=50.1))
    assert not sustained(_run(300, turn_p99_ms=4000.0))  # a backlog behind quick acks
    assert not sustained(_run(300, sent=2000))  # the load generator itself fell behind
    assert not sustained(_run(300, errors={"overloaded": 3}))
    assert not sustained({**_run(300), "rate": None})  # a closed loop: no rate to sustain


def test_the_highest_sustained_rate_and_its_cpu() -> None:
    rows = best([_run(200), _run(400), _run(600, ack_p99_ms=80.0), _run(300)])
    assert len(rows) == 1
    row = rows[0]
    assert row["offered"] == [200, 300, 400, 600] and row["sustained"] == [200, 300, 400]
    assert row["max_sustained_turns_per_s"] == 400
    assert row["system_cpu_ms_per_turn"] == 2.5  # edge + worker + redis, not the generator
    assert row["turns_per_s_at_2_cores"] == 800
    assert best([_run(600, lost=2)])[0]["max_sustained_turns_per_s"] == 0
