"""The turn's end of speech counted by each window's own probability (voice/shared_vad.py,
session 18): the turn VAD ends one window (32 ms) sooner after the sound stops than Silero's
own stream, a dip inside a sentence still does not end it, and its start of speech (barge-in, a
caller who resumes) is Silero's.

Room-free, the real Silero model: espeak-ng speech between quiet noise, resampled to 16 kHz
once and pushed in 20 ms frames to the turn VAD's stream and to a Silero stream of its own
(same samples, same inferences: only the rule differs). The loop-free test drives the turn's
filter with made-up probabilities.
"""

from __future__ import annotations

import types
from typing import cast

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import utils, vad
from livekit.plugins import silero

from tests.voice.vad_events import feed
from voice.caller import speech_48k
from voice.engines import vad_like
from voice.shared_vad import Tap, TurnVAD, _TurnFilter

RATE = 48_000
WINDOW = 512  # samples at 16 kHz
FRAME = 320  # 20 ms at 16 kHz
SENTENCES = ("what time is it", "and the weather in paris", "book a table for two",
             "call my sister tomorrow morning")


@pytest.fixture(scope="module")
def shared() -> silero.VAD:
    return cast(silero.VAD, silero.VAD.load(min_silence_duration=0.35))


async def call_16k(gap_s: float, texts: tuple[str, ...] = SENTENCES) -> np.ndarray:
    """``texts`` ``gap_s`` apart between quiet noise, at 16 kHz."""
    noise = np.random.default_rng(7).integers(-20, 20, size=RATE * 3, dtype=np.int16)
    parts = [noise[:RATE // 2]]
    for text in texts:
        parts += [await speech_48k(text), noise[:int(RATE * gap_s)]]
    parts.append(noise[:RATE])
    pcm = np.concatenate(parts)
    rs = rtc.AudioResampler(RATE, 16_000, num_channels=1)
    return np.frombuffer(b"".join(bytes(f.data) for f in [
        *rs.push(rtc.AudioFrame(pcm.tobytes(), RATE, 1, len(pcm))), *rs.flush()]),
        dtype=np.int16)


async def run(stream: vad.VADStream, pcm: np.ndarray) -> tuple[list[tuple[str, int]],
                                                               list[float]]:
    """Each start and end of speech (type, sample), and every window's probability."""
    return await feed(stream, pcm, FRAME)


async def both(shared: silero.VAD, pcm: np.ndarray
               ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The cuts of Silero's own stream and of the turn VAD's; their probabilities are the
    same (the events carry the smoothed one)."""
    own, own_p = await run(vad_like(shared).stream(), pcm)
    turn, turn_p = await run(TurnVAD(shared, Tap()).stream(), pcm)
    print(f"\nSilero's own {own}\nturn VAD     {turn}")
    assert turn_p == own_p
    return own, turn


async def test_the_turn_ends_one_window_sooner_on_real_speech(shared: silero.VAD) -> None:
    own, turn = await both(shared, await call_16k(0.8))
    assert [c[0] for c in turn] == ["start_of_speech", "end_of_speech"] * len(SENTENCES)
    assert [c[0] for c in own] == [c[0] for c in turn]
    sooner = [o[1] - t[1] for o, t in zip(own, turn, strict=True) if t[0] == "end_of_speech"]
    # each end is Silero's or one window sooner (Silero's smoothing reports the first silent
    # window at ~0.35 after a loud one: still speech; after a quiet ending it is silence)
    assert set(sooner) <= {0, WINDOW}
    assert sooner.count(WINDOW) >= len(SENTENCES) // 2


async def test_a_pause_shorter_than_the_silence_does_not_end_the_turn(
        shared: silero.VAD) -> None:
    """0.25 s between the sentences (0.1 s short of the turn's silence, counted from the
    first silent window): one turn; its end (after "what time is it") one window sooner
    than Silero's."""
    own, turn = await both(shared, await call_16k(0.25, SENTENCES[1:3] + SENTENCES[:1]))
    assert [c[0] for c in turn] == ["start_of_speech", "end_of_speech"]
    assert [c[0] for c in own] == [c[0] for c in turn]
    assert turn[0] == own[0]
    assert own[1][1] - turn[1][1] == WINDOW


async def test_start_of_speech_and_a_resumed_caller_unchanged(shared: silero.VAD) -> None:
    """The caller resumes 0.5 s after each sentence (a barge-in's start, right after the
    turn's end): every start of speech at Silero's own window."""
    own, turn = await both(shared, await call_16k(0.5))
    starts = [c for c in turn if c[0] == "start_of_speech"]
    assert len(starts) == len(SENTENCES)
    assert starts == [c for c in own if c[0] == "start_of_speech"]


def rule(raw: list[float]) -> tuple[list[int], list[float]]:
    """The windows where the turn's filter says the caller starts (+) and stops (-) speaking,
    and the smoothed probabilities it keeps for the events."""
    opts = vad_like(cast(silero.VAD, silero.VAD.load(min_silence_duration=0.35)))._opts
    stream = types.SimpleNamespace(_opts=opts, _smoothed=[],
                                   _model=types.SimpleNamespace(window_size_samples=WINDOW))
    turn = _TurnFilter(utils.ExpFilter(alpha=0.35), stream)  # type: ignore[arg-type]
    flips, was = [], False
    for i, p in enumerate(raw):
        turn.apply(exp=1.0, sample=p)
        if turn.speaking != was:
            flips.append(i if turn.speaking else -i)
            was = turn.speaking
    return flips, stream._smoothed


def test_the_turn_rule_window_by_window() -> None:
    """Loop-free: speech starts on the smoothed probability (three 0.55 windows after silence
    are 0.36, 0.49, 0.53 smoothed: not speech, where their own would be; two loud windows
    are); it ends at the 11th window (0.352 s ≥
    0.35) whose own probability is silence, one-window dips inside it do not end it, and the
    events keep the smoothed probability."""
    quiet, loud = 0.02, 0.95
    raw = [quiet] * 3 + [0.55] * 3 + [quiet] * 3 + [loud] * 10 + [0.1] + [loud] * 5 + [
        0.1] * 10 + [0.5] + [loud] * 3 + [0.1] * 11 + [quiet] * 3
    flips, smoothed = rule(raw)
    first_loud, last_loud = 9, 38  # a dip (19), a 0.32 s pause (25-34) and a 0.5 (35) within
    assert flips == [first_loud + 1, -(last_loud + 11)]
    expect, f = [], utils.ExpFilter(alpha=0.35)
    for p in raw:
        expect.append(f.apply(exp=1.0, sample=p))
    assert smoothed == expect
    assert expect[last_loud + 1] > 0.35 > raw[last_loud + 1]  # Silero's: still speech
