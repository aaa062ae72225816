"""Interim transcripts of the caller's speech (captions) from a recogniser that has none.

Whisper and pocketsphinx transcribe a whole utterance once the VAD has cut it. While the caller
speaks, :class:`InterimAdapter` (livekit-agents' ``stt.StreamAdapter`` with one more duty)
transcribes the utterance so far every ``AGENTIA_VOICE_INTERIM_S`` of new speech and hands the
text to the call (:meth:`voice.bridge.VoiceBridge.interim`), which sends it to the session's
chat clients off the log (docs/protocol.md, ``transcript``). The final transcript is made and
logged as before.

Finals first: an interim only borrows an engine of the process's pool that is free while no
final transcription waits for one (:meth:`voice.engines.EnginePool.try_decode`); otherwise it is
skipped (the next comes ``AGENTIA_VOICE_INTERIM_S`` later), and a call has at most one interim
transcription at a time. It decodes the last :data:`WINDOW_S` of the utterance: one encoder
window (``AGENTIA_VOICE_STT_CONTEXT_S``), so an interim costs about what a short final does.

:class:`Schedule` is the loop-free part: speech in, when to transcribe and what to send out.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from livekit import rtc
from livekit.agents import stt, utils
from livekit.agents.stt.stream_adapter import StreamAdapterWrapper
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)
from livekit.agents.vad import VAD, VADEventType

from voice.engines import EnginePool, PooledSTT
from voice.speech import to_mono16k

log = logging.getLogger("agentia.voice")

WINDOW_S = 10.0
"""Seconds of an utterance an interim transcribes at most (its end): one encoder window."""
MAX_CHARS = 1_000
"""Characters of one interim transcript sent at most (its end)."""
TIMEOUT_S = 3.0
"""An interim transcription not done by then is dropped (it finishes in its thread)."""
MIN_EVERY_S = 0.25
"""The shortest ``AGENTIA_VOICE_INTERIM_S`` (the per-call rate bound: 4 interims a second)."""

Emit = Callable[[str, str], Coroutine[Any, Any, None]]
"""Sends one interim transcript: (utterance id, text)."""


class Schedule:
    """One call's interims: the current utterance's audio (its last ``window_s``), when the
    next interim is due (every ``every_s`` of speech, one at a time) and which results to send
    (the current utterance's, changed, not after its end)."""

    def __init__(self, every_s: float, window_s: float = WINDOW_S,
                 ids: Iterator[str] | None = None) -> None:
        self.every_s = every_s
        self.window_s = window_s
        self._ids = ids or (f"{secrets.token_hex(3)}-{n}" for n in itertools.count(1))
        self.utterance = ""
        """The current utterance's id ("" between utterances)."""
        self.busy = False
        """An interim transcription is running."""
        self.sent = ""
        """The last text sent of the current utterance ("": none yet)."""
        self._frames: list[rtc.AudioFrame] = []
        self._secs = 0.0
        self._next = every_s

    def start(self, frames: list[rtc.AudioFrame]) -> None:
        """Speech began (with the audio the VAD kept from before)."""
        self.utterance, self.sent = next(self._ids), ""
        self._frames, self._secs, self._next = [], 0.0, self.every_s
        self._add(frames)

    def add(self, frames: list[rtc.AudioFrame], speech_s: float) -> bool:
        """More audio of the utterance, ``speech_s`` of speech so far: whether to transcribe
        it now (then :meth:`audio`, and :meth:`done` with the result)."""
        if not self.utterance:
            return False
        self._add(frames)
        if self.busy or speech_s < self._next:
            return False
        self.busy, self._next = True, speech_s + self.every_s
        return True

    def audio(self) -> list[rtc.AudioFrame]:
        return list(self._frames)

    def done(self, utterance: str, text: str | None) -> str | None:
        """An interim transcription ended (``None``: skipped or failed): the text to send,
        or None (another utterance's by now, nothing, or the same as the last sent)."""
        self.busy = False
        if text is None or utterance != self.utterance:
            return None
        text = text.strip()[-MAX_CHARS:]
        if not text or text == self.sent:
            return None
        self.sent = text
        return text

    def end(self) -> tuple[str, bool]:
        """The utterance ended (its final transcription starts): (its id, whether an interim
        of it was sent). A transcription of it still running is not sent."""
        utterance, had = self.utterance, bool(self.sent)
        self.utterance, self._frames, self._secs = "", [], 0.0
        return utterance, had

    def _add(self, frames: list[rtc.AudioFrame]) -> None:
        for f in frames:
            self._frames.append(f)
            self._secs += f.duration
        while len(self._frames) > 1 and self._secs - self._frames[0].duration >= self.window_s:
            self._secs -= self._frames.pop(0).duration


class InterimAdapter(stt.StreamAdapter):
    """``stt.StreamAdapter`` over a :class:`PooledSTT` whose streams also send interims."""

    def __init__(self, *, stt: PooledSTT, vad: VAD, every_s: float, emit: Emit) -> None:
        super().__init__(stt=stt, vad=vad)
        self.pool: EnginePool = stt.pool
        self.every_s = every_s
        self.send = emit

    def stream(self, *, language: NotGivenOr[str] = NOT_GIVEN,
               conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
               ) -> stt.RecognizeStream:
        return InterimStream(self, vad=self._vad, wrapped_stt=self._stt, language=language,
                             conn_options=conn_options)


class InterimStream(StreamAdapterWrapper):
    """livekit-agents' ``StreamAdapterWrapper._run`` (1.8.9) with the interims added."""

    def __init__(self, adapter: InterimAdapter, **kwargs: Any) -> None:
        super().__init__(adapter, **kwargs)
        self.adapter = adapter
        self.schedule = Schedule(adapter.every_s)
        self._jobs: set[asyncio.Task[None]] = set()

    async def _run(self) -> None:
        vad_stream = self._vad.stream()

        async def forward_input() -> None:
            async for frame in self._input_ch:
                if isinstance(frame, self._FlushSentinel):
                    vad_stream.flush()
                    continue
                vad_stream.push_frame(frame)
            vad_stream.end_input()

        async def recognize() -> None:
            async for event in vad_stream:
                if event.type == VADEventType.START_OF_SPEECH:
                    self.schedule.start(event.frames)
                    self._event_ch.send_nowait(
                        stt.SpeechEvent(stt.SpeechEventType.START_OF_SPEECH))
                elif event.type == VADEventType.INFERENCE_DONE:
                    if self.schedule.add(event.frames, event.speech_duration):
                        self._job(self._interim(self.schedule.utterance,
                                                self.schedule.audio()))
                elif event.type == VADEventType.END_OF_SPEECH:
                    await self._final(event)

        tasks = [asyncio.create_task(forward_input(), name="forward_input"),
                 asyncio.create_task(recognize(), name="recognize")]
        try:
            await asyncio.gather(*tasks)
        finally:
            await utils.aio.cancel_and_wait(*tasks, *self._jobs)
            await vad_stream.aclose()

    async def _final(self, event: Any) -> None:
        """What livekit-agents does at the end of speech; then an utterance that had
        interims and gives no final text gets an empty one (its caption is cleared)."""
        utterance, had = self.schedule.end()
        speech_end_time = time.time() - event.silence_duration - event.inference_duration
        self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH,
                                                   speech_end_time=speech_end_time))
        text = ""
        try:
            got = await self._wrapped_stt.recognize(
                buffer=utils.merge_frames(event.frames), language=self._language,
                conn_options=self._wrapped_stt_conn_options)
            text = got.alternatives[0].text if got.alternatives else ""
            if text:
                self._event_ch.send_nowait(stt.SpeechEvent(
                    type=stt.SpeechEventType.FINAL_TRANSCRIPT, alternatives=[got.alternatives[0]],
                    speech_end_time=(got.speech_end_time if got.speech_end_time is not None
                                     else speech_end_time)))
        finally:
            if had and not text:
                self._job(self.adapter.send(utterance, ""))

    async def _interim(self, utterance: str, frames: list[rtc.AudioFrame]) -> None:
        pool = self.adapter.pool
        try:
            text = await asyncio.wait_for(
                asyncio.to_thread(lambda: pool.try_decode(to_mono16k(frames))), TIMEOUT_S)
        except Exception as exc:  # a failed interim is skipped; the final tells the caller
            log.debug("interim transcript of %s skipped: %r", utterance, exc)
            text = None
        out = self.schedule.done(utterance, text)
        if out is not None:  # no await in between: it is sent before the utterance's final
            await self.adapter.send(utterance, out)

    def _job(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)


def streaming(recogniser: stt.STT[Any], vad: VAD, every_s: float,
              emit: Emit | None) -> stt.STT[Any]:
    """The call's streaming STT: with interims when ``recogniser`` runs on the process's
    engine pool, ``every_s`` > 0 and there is somewhere to send them; else livekit-agents'
    plain adapter."""
    if isinstance(recogniser, PooledSTT) and every_s > 0 and emit is not None:
        return InterimAdapter(stt=recogniser, vad=vad, every_s=every_s, emit=emit)
    return stt.StreamAdapter(stt=recogniser, vad=vad)
