"""The voice worker's memory switches and the voice benchmark's memory accounting, without a
LiveKit server (the worker's PSS with calls: tests/voice/test_shared_engines.py)."""

from __future__ import annotations

import os

import pytest

from loadtest.voice_figures import memory_figures
from loadtest.voice_proc import peak_rss_kib, reset_peak_rss
from voice.settings import VoiceSettings
from voice.worker import PRELOAD_LOCAL_INFERENCE, skip_unused_models


@pytest.mark.parametrize(("detection", "env", "expected"), [
    ("vad", None, "0"),  # Silero decides: livekit-agents' local models are not loaded
    ("sentence", None, "0"),  # Silero and the transcript's punctuation decide
    ("model", None, None),  # the end-of-turn model is used: its warm-up stays as it was
    ("vad", "1", "1"),  # set by the operator: theirs wins
])
def test_the_end_of_turn_model_is_preloaded_only_when_used(
        monkeypatch: pytest.MonkeyPatch, detection: str, env: str | None,
        expected: str | None) -> None:
    if env is None:
        monkeypatch.delenv(PRELOAD_LOCAL_INFERENCE, raising=False)
    else:
        monkeypatch.setenv(PRELOAD_LOCAL_INFERENCE, env)
    skip_unused_models(VoiceSettings(voice_turn_detection=detection))
    assert os.environ.get(PRELOAD_LOCAL_INFERENCE) == expected


def level(k: int, pss: float, failed: int = 0) -> dict[str, object]:
    return {"k": k, "voice_pss_mib_peak": pss, "voice_pss_mib_per_call": round(pss / k, 1),
            "failed_calls": failed}


def test_the_memory_goal_counts_only_levels_whose_calls_all_took_place() -> None:
    # 143.05 MiB = 150 MB: 4 calls in 540 MiB meet it; 1 call of 4 in 333 MiB says nothing
    got = memory_figures(270.0, [level(2, 300.0), level(4, 540.0), level(6, 600.0, failed=3)])
    assert got["voice_pss_mib_per_call"] == {"2": 150.0, "4": 135.0, "6": 100.0}
    assert got["voice_pss_mib_added_per_call"] == {"2": 15.0, "4": 67.5, "6": 55.0}
    assert got["memory_goal_met_at_calls"] == [4]


def test_the_kernels_peak_rss_restarts_from_the_current_rss() -> None:
    # from the current RSS: a test process's peak may already be far above it (CI ran this
    # after other tests had grown and freed the heap, and 64 MiB more did not reach the peak)
    assert reset_peak_rss(os.getpid())
    before = peak_rss_kib(os.getpid())
    block = bytearray(64 << 20)  # touched: +64 MiB resident
    raised = peak_rss_kib(os.getpid())
    del block
    assert raised >= before + 60 * 1024
    assert reset_peak_rss(os.getpid())
    assert peak_rss_kib(os.getpid()) < raised - 60 * 1024
