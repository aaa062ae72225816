"""Interim transcripts' scheduling (voice/interim.py) and the engine pool's finals-first rule
(voice/engines.py), without a room, a model or an event loop."""

from __future__ import annotations

import threading
import time

from livekit import rtc

from voice.engines import EnginePool
from voice.interim import MAX_CHARS, Schedule


def audio(seconds: float, rate: int = 16_000) -> rtc.AudioFrame:
    n = int(seconds * rate)
    return rtc.AudioFrame(b"\0\0" * n, rate, 1, n)


def ids() -> Schedule:
    return Schedule(1.0, window_s=3.0, ids=iter(["u1", "u2", "u3"]))


def test_an_interim_is_due_every_second_of_speech_one_at_a_time() -> None:
    s = ids()
    assert not s.add([audio(0.1)], 0.1)  # no utterance yet
    s.start([audio(0.3)])
    assert s.utterance == "u1"
    assert not s.add([audio(0.5)], 0.8)
    assert s.add([audio(0.3)], 1.1)  # due: transcribe now
    assert s.busy
    assert not s.add([audio(1.0)], 2.2)  # one at a time per call: this one is skipped
    assert s.done("u1", "hello there") == "hello there"
    assert not s.add([audio(0.3)], 2.0)  # due again at 1.1 + 1.0 of speech
    assert s.add([audio(0.3)], 2.2)


def test_the_next_one_is_counted_from_the_last_start() -> None:
    s = ids()
    s.start([])
    assert s.add([audio(1.0)], 1.0)
    assert s.done("u1", "a") == "a"
    assert not s.add([audio(0.9)], 1.9)
    assert s.add([audio(0.2)], 2.1)


def test_a_busy_pool_skips_the_interim_and_the_next_comes_later() -> None:
    s = ids()
    s.start([])
    assert s.add([audio(1.0)], 1.0)
    assert s.done("u1", None) is None  # EnginePool.try_decode: no free engine
    assert not s.busy
    assert not s.add([audio(0.5)], 1.5)  # not retried at once
    assert s.add([audio(0.5)], 2.0)


def test_only_the_current_utterance_changed_text_is_sent() -> None:
    s = ids()
    s.start([])
    assert s.add([audio(1.0)], 1.0)
    assert s.done("u1", " what time ") == "what time"
    assert s.add([audio(1.0)], 2.0)
    assert s.done("u1", "what time") is None  # unchanged: nothing to replace
    assert s.add([audio(1.0)], 3.0)
    assert s.done("u1", "") is None  # nothing heard yet
    assert s.add([audio(1.0)], 4.0)
    assert s.end() == ("u1", True)  # the final transcription starts
    assert s.done("u1", "what time is it") is None  # too late: the final replaces it
    s.start([])
    assert s.utterance == "u2"
    assert s.end() == ("u2", False)


def test_the_audio_is_the_utterances_last_window_and_the_text_its_end() -> None:
    s = ids()
    s.start([audio(0.5)])
    for _ in range(10):
        s.add([audio(0.5)], 0.0)
    kept = sum(f.duration for f in s.audio())
    assert 2.5 <= kept <= 3.0 + 1e-6
    s.add([audio(0.1)], 5.0)
    long = "word " * 400
    got = s.done("u1", long)
    assert got is not None and len(got) == MAX_CHARS and long.strip().endswith(got)


class SlowDecoder:
    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def decode(self, pcm16k: bytes) -> str:
        self.calls += 1
        self.release.wait(5)
        return f"heard {len(pcm16k)}"


def test_the_pool_gives_interims_only_a_free_engine_and_finals_first() -> None:
    engine = SlowDecoder()
    pool = EnginePool([engine], "fake")
    engine.release.set()
    assert pool.try_decode(b"ab") == "heard 2"  # free: decoded
    engine.release.clear()
    final = threading.Thread(target=pool.decode, args=(b"abcd",))
    final.start()  # holds the only engine
    deadline = time.monotonic() + 5
    while engine.calls < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.try_decode(b"x") is None  # busy: skipped at once, not waited for
    assert not pool.idle()  # and no early start either (voice/edge_stt.py)
    waiting = threading.Thread(target=pool.decode, args=(b"abc",))
    waiting.start()  # a second final waits for the engine
    while pool._waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool._waiting == 1
    engine.release.set()
    final.join(5)
    assert pool.try_decode(b"x") in (None, "heard 1")  # the waiting final goes first ...
    waiting.join(5)
    assert pool._waiting == 0
    assert pool.try_decode(b"x") == "heard 1"  # ... and then interims run again
    assert pool.idle()
    assert engine.calls >= 4


class QuickDecoder:
    """A decoder with a cheaper decoding for guesses (Whisper's ``decode_quick``)."""

    def decode(self, pcm16k: bytes) -> str:
        return "full"

    def decode_quick(self, pcm16k: bytes) -> str:
        return "quick"


def test_interims_take_the_cheaper_decoding_and_finals_the_full_one() -> None:
    pool = EnginePool([QuickDecoder()], "fake")
    assert pool.try_decode(b"ab") == "quick"
    assert pool.decode(b"ab") == "full"
