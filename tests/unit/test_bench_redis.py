"""bench_redis's arithmetic: the fit over levels and the merge of rounds (no Redis needed)."""

from __future__ import annotations

from typing import Any

import pytest

from loadtest.bench_redis import fit, merge, plane


def level(deltas: int, chars: int, **over: float) -> dict[str, Any]:
    base: dict[str, Any] = {"deltas_per_turn": deltas, "reply_chars": chars,
                            "commands_per_s_per_core": 1000}
    # per-turn figures that are exactly a + b * pieces + c * chars
    for key, (a, b, c) in {"redis_cpu_s_per_turn": (3e-4, 2e-5, 2e-8),
                           "client_cpu_s_per_turn": (2e-3, 1e-4, 1e-7),
                           "redis_commands_per_turn": (74.0, 2.0, 0.0),
                           "log_bytes_per_turn": (400.0, 0.0, 1.1),
                           "log_events_per_turn": (3.0, 0.0, 0.0),
                           "memory_bytes_per_turn": (180.0, 0.0, 1.07),
                           "delivery_bytes_per_turn": (390.0, 100.0, 2.3)}.items():
        base[key] = a + b * deltas + c * chars
    return base | over


LEVELS = [level(4, 800), level(16, 800), level(4, 3200), level(150, 1200)]


def test_the_fit_recovers_the_per_piece_and_per_char_costs() -> None:
    f = fit(LEVELS)
    assert f["redis_cpu_s_per_turn_base"] == pytest.approx(3e-4)
    assert f["redis_cpu_s_per_delta"] == pytest.approx(2e-5)
    assert f["redis_cpu_s_per_reply_char"] == pytest.approx(2e-8)
    assert f["commands_per_turn_base"] == pytest.approx(74.0)
    assert f["commands_per_delta"] == pytest.approx(2.0)
    assert f["log_events_base"] == pytest.approx(3.0)
    assert f["log_events_per_delta"] == pytest.approx(0.0, abs=1e-9)
    assert f["delivery_bytes_per_delta"] == pytest.approx(100.0)


def test_an_axis_the_levels_do_not_vary_gets_no_slope() -> None:
    same_size = [level(4, 800), level(16, 800), level(150, 800)]
    a, b, c = plane(same_size, "redis_commands_per_turn")
    assert [a, b, c] == pytest.approx([74.0, 2.0, 0.0])


def test_rounds_merge_to_the_median_of_each_figure() -> None:
    def run(cpu: float) -> dict[str, Any]:
        lv = level(4, 800, redis_cpu_s_per_turn=cpu)
        return {"redis_version": "7", "appendonly": True, "reply_path": "chunks",
                "idle": {"sessions": 10, "redis_bytes_per_idle_session": cpu * 1e6},
                "levels": [lv, level(16, 800), level(4, 3200)]}

    m = merge([run(1e-3), run(5e-3), run(2e-3)])
    assert m["levels"][0]["redis_cpu_s_per_turn"] == 2e-3
    assert m["idle"]["redis_bytes_per_idle_session"] == pytest.approx(2000)
    assert m["rounds"] == 3 and m["reply_path"] == "chunks"
