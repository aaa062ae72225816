"""The recogniser starts at the speech -> silence edge (voice/edge_stt.py), room-free.

A scripted VAD stream (Silero's event order: START_OF_SPEECH with the frames so far, one
INFERENCE_DONE per 32 ms window, END_OF_SPEECH with the whole utterance) and a recogniser that
names the audio it was given: which audio became the final transcript, and when it was started.
The real call, through a LiveKit server, is tests/voice/test_call.py (the worker's default).
"""

from __future__ import annotations

import ast
import asyncio
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from livekit import rtc
from livekit.agents import APIConnectOptions, stt, utils, vad
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from agentia.settings import SettingsError
from sessions.bus import Bus
from tests.conftest import Cluster
from tests.voice.conftest import voice_call
from tests.voice.livekit_server import LiveKitServer
from voice import edge_stt
from voice.caller import RATE as RATE_48K
from voice.caller import speech_48k
from voice.edge_stt import EdgeSTT
from voice.settings import VoiceSettings
from voice.speech import final_transcript, normalise

RATE = 16_000
WINDOW = 512  # Silero's 32 ms at 16 kHz


def window(n: int) -> rtc.AudioFrame:
    """A 32 ms frame whose first sample is ``n``: the recogniser can tell the windows apart."""
    data = bytearray(WINDOW * 2)
    data[0:2] = n.to_bytes(2, "little")
    return rtc.AudioFrame(bytes(data), RATE, 1, WINDOW)


def ev(kind: vad.VADEventType, frames: list[rtc.AudioFrame], p: float = 0.0,
       speaking: bool = True) -> vad.VADEvent:
    return vad.VADEvent(type=kind, samples_index=0, timestamp=0.0, speech_duration=0.0,
                        silence_duration=0.2, frames=frames, probability=p, speaking=speaking)


Until = Callable[[dict[str, int]], bool]
"""A pause in a script: until the recogniser stream's counts say so (bounded: 5 s)."""


class ScriptedVAD(vad.VAD):
    """Replays ``script`` (probabilities of windows 1.. after a START with window 0; then an
    END_OF_SPEECH with every window) once the stream's input has ended; an :data:`Until` in
    it waits for the recogniser stream (``counts``) to have done something."""

    def __init__(self, script: Sequence[float | Until]) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=0.032))
        self.script = script
        self.counts: dict[str, int] = {}
        self.changed = asyncio.Event()
        """Set at every event the recogniser stream sends (``counts`` may have changed)."""

    @property
    def model(self) -> str:
        return "scripted"

    @property
    def provider(self) -> str:
        return "test"

    def stream(self) -> vad.VADStream:
        return _Scripted(self)


class _Scripted(vad.VADStream):
    async def _main_task(self) -> None:
        script = self._vad.script  # type: ignore[attr-defined]
        async for _ in self._input_ch:
            pass
        frames = [window(0)]
        self._event_ch.send_nowait(ev(vad.VADEventType.START_OF_SPEECH, list(frames)))
        for p in script:
            if not isinstance(p, float):
                changed: asyncio.Event = self._vad.changed  # type: ignore[attr-defined]
                async with asyncio.timeout(5):
                    while not p(self._vad.counts):  # type: ignore[attr-defined]
                        changed.clear()
                        await changed.wait()
                continue
            frames.append(window(len(frames)))
            self._event_ch.send_nowait(ev(vad.VADEventType.INFERENCE_DONE, [frames[-1]], p))
            await asyncio.sleep(0.01)  # let an early transcription start, as in real time
        self._event_ch.send_nowait(ev(vad.VADEventType.END_OF_SPEECH, frames, speaking=False))


class Namer(stt.STT[Any]):
    """Transcribes a buffer as "w<first>-w<last>" (its windows), after ``delay_s``."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.delay_s = delay_s
        self.calls: list[str] = []
        self.done = 0
        self.changed: asyncio.Event | None = None
        """Set when a transcription is done (a script's :data:`Until` waits on it)."""

    async def _recognize_impl(self, buffer: utils.AudioBuffer, *,
                              language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions) -> stt.SpeechEvent:
        frame = rtc.combine_audio_frames(buffer)
        n = frame.samples_per_channel // WINDOW
        first = int.from_bytes(bytes(frame.data)[0:2], "little")
        last = int.from_bytes(bytes(frame.data)[(n - 1) * WINDOW * 2:][:2], "little")
        self.calls.append(f"w{first}-w{last}")
        await asyncio.sleep(self.delay_s)
        self.done += 1
        if self.changed is not None:
            self.changed.set()
        return final_transcript(f"w{first}-w{last}")


async def transcripts(script: Sequence[float | Until], namer: Namer, early_s: float,
                      send_s: float = 0.06) -> tuple[list[str], dict[str, int]]:
    """The final transcripts, and the stream's counts (utterances, at_the_edge, discarded,
    sent_early, resumed)."""
    scripted = ScriptedVAD(script)
    namer.changed = scripted.changed
    edge = EdgeSTT(stt=namer, vad=scripted, early_s=early_s, send_s=send_s)
    stream = edge.stream()
    scripted.counts = stream.counts  # type: ignore[attr-defined]
    stream.push_frame(window(99))
    stream.end_input()
    got = []
    async for e in stream:
        scripted.changed.set()
        if e.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
            got.append(e.alternatives[0].text)
    return got, dict(stream.counts)  # type: ignore[attr-defined]


SPEECH, SILENCE = 0.9, 0.1


def sent(n: int) -> Until:
    return lambda counts: counts["sent_early"] == n


def counted(edge: int = 0, discarded: int = 0, early: int = 0, resumed: int = 0
            ) -> dict[str, int]:
    return {"utterances": 1, "at_the_edge": edge, "discarded": discarded, "sent_early": early,
            "resumed": resumed}


async def test_the_transcription_starts_at_the_edge_and_is_sent_while_silent() -> None:
    namer = Namer()
    got, counts = await transcripts([SPEECH] * 3 + [SILENCE] * 2 + [sent(1)] + [SILENCE] * 4,
                                    namer, early_s=0.06)
    assert counts == counted(edge=1, early=1)
    # started after 2 silent windows (w4, w5): the utterance up to w5, not the 4 windows after;
    # sent as the final before the VAD's end of the utterance
    assert namer.calls == ["w0-w5"]
    assert got == ["w0-w5"]


async def test_an_early_transcription_still_running_at_the_end_becomes_the_final() -> None:
    namer = Namer(delay_s=0.3)
    got, counts = await transcripts([SPEECH] * 3 + [SILENCE] * 6, namer, early_s=0.06)
    assert counts == counted(edge=1)
    assert namer.calls == ["w0-w5"] and got == ["w0-w5"]


async def test_a_caller_who_resumes_after_the_early_final_gets_the_rest_as_another() -> None:
    """The session joins the two finals into one turn (the preemptive turn of the first is
    cancelled when the caller speaks again): each part is transcribed once."""
    namer = Namer()
    script = [SPEECH] * 2 + [SILENCE] * 2 + [sent(1)] + [SPEECH] * 2 + [SILENCE] * 2 + [sent(2)]
    got, counts = await transcripts(script + [SILENCE] * 3, namer, early_s=0.06)
    assert counts == counted(edge=1, early=2, resumed=1)
    assert namer.calls == ["w0-w4", "w5-w8"] and got == namer.calls
    # the VAD ends the utterance before a second early start: its end transcribes the rest
    namer = Namer()
    got, counts = await transcripts(script[:7], namer, early_s=0.06)
    assert counts == counted(early=1, resumed=1)
    assert namer.calls == ["w0-w4", "w5-w6"] and got == namer.calls


async def test_a_transcript_done_early_waits_for_the_send_silence() -> None:
    """Done after 3 silent windows, short of 0.15 s: not sent; the caller resumes and it is
    discarded; the next is sent once the silence reaches 0.15 s (5 windows)."""
    namer = Namer()
    script = [SPEECH] * 3 + [SILENCE] * 2 + [lambda _: namer.done == 1] + [SILENCE, SPEECH]
    got, counts = await transcripts(script + [SILENCE] * 5 + [sent(1)] + [SILENCE], namer,
                                    early_s=0.06, send_s=0.15)
    assert counts == counted(edge=1, discarded=1, early=1)
    assert namer.calls == ["w0-w5", "w0-w9"] and got == ["w0-w9"]


async def test_one_transcription_at_a_time_per_call() -> None:
    namer = Namer(delay_s=0.5)  # the discarded one is still running at the end
    script = [SPEECH] * 2 + [SILENCE] * 2 + [SPEECH] * 2 + [SILENCE] * 5
    got, counts = await transcripts(script, namer, early_s=0.06)
    assert counts == counted(discarded=1)
    assert namer.calls == ["w0-w4", "w0-w11"]  # the end transcribes it all, the usual way
    assert got == ["w0-w11"]


class BusyPool:
    """An engine pool (voice.engines.EnginePool) with no engine free."""

    def idle(self) -> bool:
        return False


async def test_no_early_start_while_the_engine_pool_is_busy() -> None:
    """A guess that may be discarded must not make another call's utterance wait for an
    engine: with every engine of the process busy the utterance is transcribed at its end."""
    namer = Namer()
    namer.pool = BusyPool()  # type: ignore[attr-defined]
    got, counts = await transcripts([SPEECH] * 3 + [SILENCE] * 6, namer, early_s=0.06)
    assert counts == counted()
    assert namer.calls == ["w0-w9"] and got == ["w0-w9"]


async def test_early_s_at_the_vads_silence_is_the_old_behaviour() -> None:
    namer = Namer()
    got, counts = await transcripts([SPEECH] * 3 + [SILENCE] * 6, namer, early_s=1.0)
    assert counts == counted()
    assert namer.calls == ["w0-w9"] and got == ["w0-w9"]


@pytest.mark.e2e
async def test_a_pause_shorter_than_the_recognisers_silence_stays_one_turn(
        cluster: Cluster, bus: Bus, livekit: LiveKitServer) -> None:
    """Through a real room: the caller pauses 0.2 s mid-sentence, past the early start and short
    of the recogniser's 0.2 s of silence (Silero counts it from ~0.1 s after the last sound):
    the early transcript of the first half is discarded and the turn is the whole sentence."""
    cluster.worker()
    async with voice_call(cluster, livekit, "alice", AGENTIA_VOICE_STT_EARLY_S="0.03") as c:
        first, second = (await speech_48k("tell me about the weather"),
                         await speech_48k("in paris tomorrow"))
        pause = np.zeros(int(0.2 * RATE_48K), dtype=np.int16)
        await c.joined.say(np.concatenate([first, pause, second]))
        user = await c.chat.until("user", timeout=20)
        # a word of each half in the one turn (Whisper may mishear "in paris" after the pause:
        # seen "it is"; and "weather" as "winner", its most frequent slip on espeak-ng, as in
        # test_call.py): what the words are is test_wer's business
        heard = set(normalise(user["text"]).split())
        assert heard & {"tell", "about", "weather"} and heard & {"paris", "tomorrow"}, user
        await c.chat.until("reply", timeout=20, turn=user["offset"])
        r = await bus.replay(c.sid, 0, None)
        turns = [e for _, raw in r.events if (e := orjson.loads(raw))["type"] == "user"]
        assert len(turns) == 1, turns
    log = c.worker.text()
    assert "Traceback" not in log, c.worker.log_path
    closed = [ast.literal_eval(m) for m in re.findall(r"recogniser stream closed: (\{.*\})", log)]
    # the pause did start one: discarded, or sent before the caller resumed (then the rest
    # was a final of its own, and the session made the two one turn)
    assert sum(n["discarded"] + n["resumed"] for n in closed) >= 1, closed


async def test_a_long_utterance_is_transcribed_at_its_end_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edge_stt, "MAX_EARLY_S", 0.15)  # 30 s in a call: not kept twice
    namer = Namer()
    got, counts = await transcripts([SPEECH] * 3 + [SILENCE] * 6, namer, early_s=0.06)
    assert counts == counted()
    assert namer.calls == ["w0-w9"] and got == ["w0-w9"]


def test_the_early_start_is_bounded_by_the_recognisers_silence() -> None:
    VoiceSettings(voice_stt_early_s=0.2).validate()  # at it: the old behaviour
    for bad in (-0.01, 0.21):
        with pytest.raises(SettingsError):
            VoiceSettings(voice_stt_early_s=bad).validate()


def test_the_edge_is_the_first_silent_window_through_silero_smoothing() -> None:
    """Silero's stream reports ``0.35 * previous + 0.65 * raw``: the first silent window
    after speech is reported at ~0.35, above the exit threshold; its own probability is not."""
    smoothed, reported = 0.99, []
    for raw in (0.99, 0.99, 0.01, 0.01, 0.9):
        smoothed = edge_stt.SILERO_SMOOTHING * smoothed + (1 - edge_stt.SILERO_SMOOTHING) * raw
        reported.append(smoothed)
    assert reported[2] > edge_stt.SILERO_DEACTIVATION  # speech by Silero's rule
    raws = [edge_stt.raw_probability(p, prev)
            for p, prev in zip(reported[1:], reported[:-1], strict=True)]
    assert raws == pytest.approx([0.99, 0.01, 0.01, 0.9])


async def test_the_early_start_sees_through_the_smoothing() -> None:
    """A window reported above the exit threshold whose own probability is silent starts the
    early transcription (at ``early_s`` of one window), and is not a resumption of speech."""
    namer = Namer(delay_s=0.3)
    lagging = 0.36  # 0.35 * 0.9 + 0.65 * 0.07: a silent window after speech, smoothed
    got, counts = await transcripts([SPEECH] * 3 + [lagging] + [SILENCE] * 5, namer,
                                    early_s=0.03)
    assert counts == counted(edge=1)
    assert namer.calls == ["w0-w4"] and got == ["w0-w4"]  # from the first silent window, w4
