"""bench_voice's figures: what ``--record`` keeps of a run (docs/benchmarks.md, docs/voice.md
and the capacity model read them), and the voice worker tree's memory per call against the
issue's goal."""

from __future__ import annotations

from typing import Any

MEMORY_GOAL_MB = 150.0
"""Issue 16: at most this many MB (10^6 bytes) of the voice worker tree's PSS per call."""


def figures(out: dict[str, Any], p95_limit: float) -> dict[str, Any]:
    """The figures ``--record`` keeps (docs/benchmarks.md and the capacity model read them)."""
    lat, cap = out.get("latency", {}), out.get("capacity", {})
    levels = [{k: lv.get(k) for k in ("k", "starts", "start_delays_s", "n", "p50_ms",
                                     "p95_ms", "max_ms", "p50_from_queued", "p95_from_queued",
                                     "failed_calls", "unanswered", "transcripts_right",
                                     "heard_not_said",
                                     "voice_cpu_cores", "voice_cpu_s_per_phrase", "idle",
                                     "bench_client_cpu_cores", "voice_pss_mib_peak",
                                     "voice_pss_mib_per_call",
                                     "voice_rss_mib_peak", "voice_rss_mib_hwm",
                                     "voice_processes_peak", "machine_busy_pct",
                                     "other_load_cores", "within_limit", "stages", "path",
                                     "caller_jitter_buffer_p50", "caller_mic_queue",
                                     "cpu_s_by_process", "decodes", "uplink_jitter_buffer",
                                     "voice_threads_cores", "bench_callers_threads_cores")}
              for lv in cap.get("levels", []) if "skipped" not in lv]
    best = cap.get("max_k_p95_within_limit")
    return {
        "tree": out.get("tree"), "commit": out.get("commit"), "setup": out.get("setup"),
        "model_tokens_per_s": out.get("setup", {}).get("model_tokens_per_s"),
        "stages_sequential": lat.get("stages"), "recogniser": out.get("recogniser"),
        "turn_ends": out.get("turn_ends"),
        "path_sequential": lat.get("path"),
        "caller_jitter_buffer_sequential": lat.get("caller_jitter_buffer_p50"),
        "caller_mic_queue_sequential": lat.get("caller_mic_queue"),
        "stt": out["stt_alone"]["stt"], "stt_ms_per_utterance": out["stt_alone"],
        "end_of_speech_to_first_audio_ms": {
            "sequential": {k: lat.get(k) for k in ("n", "p50_ms", "p95_ms", "max_ms",
                                                   "p50_from_queued", "p95_from_queued",
                                                   "failed",
                                                   "machine_busy_pct", "loadavg_1m")},
            "concurrent": levels},
        "transcripts_right_sequential": lat.get("transcripts_right"),
        "misheard": lat.get("misheard"), "p95_limit_ms": p95_limit,
        f"max_calls_p95_under_{p95_limit:.0f}ms": best,
        "max_calls_p95_under_limit_independent": cap.get("max_k_p95_within_limit_independent"),
        "decodes_sequential": lat.get("decodes"),
        "uplink_jitter_buffer_sequential": lat.get("uplink_jitter_buffer"),
        # null when no level met the p95 bound: `agentia capacity` then says so and asks for
        # --calls-per-voice-worker rather than inventing a figure
        "calls_per_voice_worker": best,
        # the worst case's levels (with --starts both a level's k is there twice)
        **memory_figures(out.get("voice_pss_mib_idle"),
                         [lv for lv in levels if lv.get("starts") != "independent"]),
    }


def memory_figures(idle_mib: float | None, levels: list[dict[str, Any]]) -> dict[str, Any]:
    """The voice worker tree's PSS: before any call, per call at each level (peak ÷ calls)
    and what each call added to the idle worker, against the issue's MB per call (met only
    at a level whose calls all took place: fewer calls would share the same worker)."""
    per_call = {str(lv["k"]): lv.get("voice_pss_mib_per_call") for lv in levels}
    whole = {str(lv["k"]) for lv in levels if not lv.get("failed_calls")}
    added = {str(lv["k"]): round((lv["voice_pss_mib_peak"] - idle_mib) / lv["k"], 1)
             for lv in levels if idle_mib is not None and lv.get("voice_pss_mib_peak")}
    goal_mib = MEMORY_GOAL_MB * 1e6 / 2**20
    return {"voice_pss_mib_idle": idle_mib, "voice_pss_mib_per_call": per_call,
            "voice_pss_mib_added_per_call": added, "memory_goal_mb_per_call": MEMORY_GOAL_MB,
            "memory_goal_met_at_calls": [int(k) for k, v in per_call.items()
                                         if v is not None and v <= goal_mib and k in whole]}

