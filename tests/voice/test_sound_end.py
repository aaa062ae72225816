"""The bench's end of speech (voice/caller.py ``played_out_at``, loadtest/voice_calls.py): when
the last speech sample leaves the caller's microphone source, not when it was queued. No room:
a real ``rtc.AudioSource`` keeps its own account of what it holds."""

from __future__ import annotations

import time

import numpy as np
from livekit import rtc

from loadtest.voice_calls import summary
from voice.caller import FRAME, RATE, played_out_at


async def test_the_sound_ends_after_what_the_source_holds_ahead_of_it() -> None:
    source = rtc.AudioSource(RATE, 1, queue_size_ms=200)
    try:
        silent = np.zeros(FRAME * 5, dtype=np.int16)  # 100 ms queued ahead
        await source.capture_frame(rtc.AudioFrame(silent.tobytes(), RATE, 1, len(silent)))
        ahead = source.queued_duration
        assert 0.05 < ahead <= 0.1
        now = time.monotonic()
        end = played_out_at(source, FRAME // 2)  # a last frame with 10 ms of speech
        assert abs(end - (now + ahead + 0.01)) < 0.02
    finally:
        await source.aclose()


async def test_an_empty_source_plays_the_speech_at_once() -> None:
    source = rtc.AudioSource(RATE, 1, queue_size_ms=50)
    try:
        now = time.monotonic()
        assert abs(played_out_at(source, FRAME) - (now + 0.02)) < 0.005
    finally:
        await source.aclose()


def test_the_summary_keeps_the_old_figure_beside() -> None:
    got = summary([0.6, 0.7, 0.8], [0.61, 0.72, 0.83])
    assert (got["p50_ms"], got["p50_from_queued"]) == (700, 720)
    assert "p50_from_queued" not in summary([0.6])
