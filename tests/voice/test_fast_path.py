"""The latency and memory paths of a call: the first clause spoken early, shared engines.

Without a room: the tokenizer, the engine pool and espeak-ng behind livekit-agents' own
``tts.StreamAdapter`` (the room tests are in test_call.py and test_join_timeout.py, which run
the thread executor, the default).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from livekit.agents import APIError, tts
from livekit.rtc import AudioFrame

from agentia.settings import SettingsError
from voice.chunking import FirstClauseTokenizer, first_cut
from voice.engines import EnginePool, PooledSTT, once
from voice.settings import VoiceSettings
from voice.speech import EspeakTTS, decode_bounded

REPLY = ("You said: tell me about the weather in paris tomorrow. I am a demo agent; I can "
         "tell time, do sums, book tables. This is a demo.")


def test_the_first_piece_ends_at_a_clause_or_after_max_words() -> None:
    assert REPLY[:first_cut(REPLY, 2, 6)] == "You said:"
    # a letter and a clause mark end it at once; a digit's or a full stop's wait for the space
    assert first_cut("You said:", 2, 6) == len("You said:")
    assert first_cut("Hello there!", 2, 6) == len("Hello there!")
    assert first_cut("You said", 2, 6) == 0  # may be in a word
    assert first_cut("Hi:", 2, 6) == 0  # 1 word < 2
    assert first_cut("It costs 1,", 2, 6) == 0  # "1,000"
    assert first_cut("Meet at 10:", 2, 6) == 0  # "10:30"
    assert first_cut("Ask Dr.", 2, 6) == 0  # "Dr. Smith"
    assert first_cut("Hi, there you are. ", 2, 6) == len("Hi, there you are.")  # 1 word < 2
    six = "one two three four five six seven"
    assert six[:first_cut(six, 2, 6)] == "one two three four five six"
    assert first_cut("Pi is 3.14 exactly, ok", 2, 6) == len("Pi is 3.14 exactly,")


async def pieces(words: list[str], tok: FirstClauseTokenizer) -> list[str]:
    stream = tok.stream()
    for w in words:
        stream.push_text(w + " ")
    stream.end_input()
    return [ev.token.strip() async for ev in stream]


async def test_the_stream_sends_the_opening_clause_then_whole_sentences() -> None:
    got = await pieces(REPLY.split(" "), FirstClauseTokenizer(2, 6))
    assert got == ["You said:", "tell me about the weather in paris tomorrow.",
                   "I am a demo agent; I can tell time, do sums, book tables.",
                   "This is a demo."]
    assert " ".join(got) == REPLY


async def test_the_opening_clause_goes_as_its_mark_arrives() -> None:
    """Streamed the way the model streams (a word and its leading space a token), "You said:"
    goes to the TTS with its own token, not one token later; the reply stays whole."""
    stream = FirstClauseTokenizer(2, 6).stream()
    for token in ("You", " said:"):
        stream.push_text(token)
    first = await asyncio.wait_for(anext(stream), 5)
    assert first.token == "You said:"
    for token in (" tell", " me", " more."):
        stream.push_text(token)
    stream.end_input()
    assert [ev.token.strip() async for ev in stream] == ["tell me more."]


async def test_each_segment_gets_its_own_opening_clause() -> None:
    stream = FirstClauseTokenizer(2, 4).stream()
    for text in ("Hello there, friend. ", None, "Second reply goes here now. "):
        if text is None:
            stream.flush()
        else:
            stream.push_text(text)
    stream.end_input()
    got = [ev.token.strip() async for ev in stream]
    assert got == ["Hello there,", "friend.", "Second reply goes here", "now."]


def test_settings_bound_the_new_knobs() -> None:
    for bad in ({"voice_first_chunk_words": 51}, {"voice_stt_engines": 0},
                {"voice_malloc_arenas": 65}, {"voice_input_frame_ms": 5}):
        with pytest.raises(SettingsError):
            VoiceSettings(**bad).validate()  # type: ignore[arg-type]
    assert VoiceSettings().voice_executor == "thread"


class SlowDecoder:
    """Takes ``delay`` seconds an utterance and counts how many run at once."""

    def __init__(self, delay: float, seen: list[int], lock: threading.Lock) -> None:
        self.delay, self.seen, self.lock = delay, seen, lock
        self.running = 0

    def decode(self, pcm16k: bytes) -> str:
        with self.lock:
            self.seen[0] += 1
            self.seen[1] = max(self.seen[1], self.seen[0])
        time.sleep(self.delay)
        with self.lock:
            self.seen[0] -= 1
        return f"{len(pcm16k)} bytes"


@pytest.mark.parametrize("engines", [1, 2])
async def test_the_pool_decodes_as_many_utterances_at_once_as_it_has_engines(
        engines: int) -> None:
    seen, lock = [0, 0], threading.Lock()
    pool = EnginePool([SlowDecoder(0.2, seen, lock) for _ in range(engines)], "slow")
    t0 = time.monotonic()
    got = await asyncio.gather(*(decode_bounded(pool.decode, b"\0" * 8, 5.0)
                                 for _ in range(4)))
    took = time.monotonic() - t0
    assert got == ["8 bytes"] * 4
    assert seen[1] == engines  # never more at once than engines, and that many
    assert took >= 0.2 * 4 / engines - 0.05


async def test_a_call_waiting_for_a_busy_engine_is_bounded() -> None:
    seen, lock = [0, 0], threading.Lock()
    pool = EnginePool([SlowDecoder(1.0, seen, lock)], "slow")
    stt = PooledSTT(pool, timeout_s=0.3)
    busy = asyncio.create_task(decode_bounded(pool.decode, b"", 5.0))
    await asyncio.sleep(0.05)
    with pytest.raises(APIError, match=r"took over 0\.3 s"):
        await stt.recognize(AudioFrame(b"\0\0" * 160, 16_000, 1, 160))
    await busy


def test_once_makes_a_thing_once_per_process() -> None:
    made: list[int] = []

    def make() -> int:
        made.append(1)
        return len(made)
    key = ("test", object())
    assert [once(key, make) for _ in range(3)] == [1, 1, 1] and made == [1]


async def test_espeak_speaks_the_opening_clause_before_the_sentence_is_complete() -> None:
    """The TTS adapter the worker builds: audio for "You said:" comes while the first sentence
    is still incomplete (whole-sentence chunking waits for its end and the start of the next).
    Load-independent: the text stops one word short of the sentence's end, then the test
    waits for audio (the first clause: it comes however slow espeak is; whole sentences:
    none in 2 s), then gives the rest."""
    words = REPLY.split(" ")
    sentence_words = len(REPLY[:REPLY.index(".")].split(" "))
    for first_words, early in ((6, True), (0, False)):
        espeak = EspeakTTS()
        tok = FirstClauseTokenizer(2, first_words) if first_words else None
        adapter = (tts.StreamAdapter(tts=espeak, sentence_tokenizer=tok) if tok
                   else tts.StreamAdapter(tts=espeak))
        async with adapter.stream() as stream:
            for w in words[:sentence_words - 1]:
                stream.push_text(w + " ")
            first = asyncio.ensure_future(anext(aiter(stream)))
            done, _ = await asyncio.wait([first], timeout=30 if early else 2)
            assert bool(done) is early, (first_words, "audio before the sentence's end")
            for w in words[sentence_words - 1:]:
                stream.push_text(w + " ")
            stream.end_input()
            await asyncio.wait_for(first, 30)  # whole sentences: it comes now
        await adapter.aclose()
