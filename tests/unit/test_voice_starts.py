"""bench_voice's capacity starts: every caller at once (the worst case) or independent callers
after seeded random delays, reported side by side (loadtest/voice_phases.py)."""

from __future__ import annotations

from loadtest.voice_figures import figures
from loadtest.voice_phases import SPREAD_S, Starts, _best, _best_key


def test_together_starts_every_caller_at_once() -> None:
    assert Starts().modes == ("together",)
    assert Starts().delays("together", 4) == [0.0, 0.0, 0.0, 0.0]


def test_independent_delays_are_seeded_spread_and_differ_by_level() -> None:
    s = Starts(("together", "independent"), spread_s=SPREAD_S, seed=16)
    four = s.delays("independent", 4)
    assert four == Starts(seed=16).delays("independent", 4)  # rerunnable: the same delays
    assert len(four) == 4 and all(0 <= d <= SPREAD_S for d in four)
    assert len(set(four)) == 4
    assert four != Starts(seed=17).delays("independent", 4)
    assert four != s.delays("independent", 5)[:4]
    assert Starts(spread_s=0).delays("independent", 3) == [0.0, 0.0, 0.0]


def test_each_mode_has_its_own_capacity_the_worst_cases_as_before() -> None:
    out = [{"k": 1, "starts": "together", "within_limit": True},
           {"k": 1, "starts": "independent", "within_limit": True},
           {"k": 2, "starts": "together", "within_limit": False},
           {"k": 2, "starts": "independent", "within_limit": True}]
    assert _best(out, [1, 2], "together") == 1
    assert _best(out, [1, 2], "independent") == 2
    assert _best_key("together") == "max_k_p95_within_limit"
    assert _best_key("independent") == "max_k_p95_within_limit_independent"


def test_the_record_keeps_both_and_counts_memory_on_the_worst_case() -> None:
    level = {"n": 8, "p50_ms": 900, "p95_ms": 1000, "failed_calls": 0}
    run = {"stt_alone": {"stt": "whisper-ct2:base"}, "voice_pss_mib_idle": 200.0,
           "capacity": {"levels": [
               {**level, "k": 4, "starts": "together", "voice_pss_mib_peak": 520.0,
                "voice_pss_mib_per_call": 130.0},
               {**level, "k": 4, "starts": "independent", "start_delays_s": [1.0, 2.0, 0, 3],
                "voice_pss_mib_peak": 999.0, "voice_pss_mib_per_call": 250.0}],
               "max_k_p95_within_limit": None, "max_k_p95_within_limit_independent": 4}}
    got = figures(run, 900.0)
    levels = got["end_of_speech_to_first_audio_ms"]["concurrent"]
    assert [lv["starts"] for lv in levels] == ["together", "independent"]
    assert levels[1]["start_delays_s"] == [1.0, 2.0, 0, 3]
    assert got["max_calls_p95_under_limit_independent"] == 4
    assert got["calls_per_voice_worker"] is None  # the worst case decides, as before
    assert got["voice_pss_mib_per_call"] == {"4": 130.0}
    assert got["voice_pss_mib_added_per_call"] == {"4": 80.0}
