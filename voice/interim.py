"""Interim transcripts of the caller's speech (captions) from a recogniser that has none.

Whisper and pocketsphinx transcribe a whole utterance once the VAD has cut it. While the caller
speaks, :class:`InterimAdapter` (:class:`voice.edge_stt.EdgeSTT` with one more duty)
transcribes the utterance so far every ``AGENTIA_VOICE_INTERIM_S`` of new speech and hands the
text to the call (:meth:`voice.bridge.VoiceBridge.interim`), which sends it to the session's
chat clients off the log (docs/protocol.md, ``transcript``). The final transcript is made and
logged as before.

Finals first: an interim only borrows an engine of the process's pool that is free while no
final transcription waits for one (:meth:`voice.engines.EnginePool.try_decode`); otherwise it is
skipped (the next comes ``AGENTIA_VOICE_INTERIM_S`` later), and a call has at most one interim
transcription at a time. It decodes the last :data:`WINDOW_S` of the utterance, quickly
(``WhisperSTT.decode_quick``: the audio and 1 s of silence, greedy).

:class:`Schedule` is the loop-free part: speech in, when to transcribe and what to send out.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from livekit import rtc
from livekit.agents import stt, utils
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)
from livekit.agents.vad import VAD, VADEvent

from voice.edge_stt import EdgeStream, EdgeSTT
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


class InterimAdapter(EdgeSTT):
    """:class:`voice.edge_stt.EdgeSTT` over a :class:`PooledSTT` whose streams also send
    interims."""

    def __init__(self, *, stt: PooledSTT, vad: VAD, early_s: float, every_s: float,
                 emit: Emit) -> None:
        super().__init__(stt=stt, vad=vad, early_s=early_s)
        self.pool: EnginePool = stt.pool
        self.every_s = every_s
        self.send = emit

    def stream(self, *, language: NotGivenOr[str] = NOT_GIVEN,
               conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
               ) -> stt.RecognizeStream:
        return InterimStream(self, language=language, conn_options=conn_options)


class InterimStream(EdgeStream):
    """The edge stream (early finals) with the interims added through its hooks."""

    def __init__(self, adapter: InterimAdapter, *, language: NotGivenOr[str],
                 conn_options: APIConnectOptions) -> None:
        super().__init__(adapter, language=language, conn_options=conn_options)
        self.adapter = adapter
        self.schedule = Schedule(adapter.every_s)
        self._jobs: set[asyncio.Task[None]] = set()
        self._had = ("", False)

    def _started(self, ev: VADEvent) -> None:
        self.schedule.start(ev.frames)

    def _inferred(self, ev: VADEvent) -> None:
        if self.schedule.add(ev.frames, ev.speech_duration):
            self._job(self._interim(self.schedule.utterance, self.schedule.audio()))

    def _ending(self) -> None:
        self._had = self.schedule.end()

    def _ended(self, text: str) -> None:
        """An utterance that had interims and gives no final text gets an empty one (its
        caption is cleared)."""
        utterance, had = self._had
        if had and not text:
            self._job(self.adapter.send(utterance, ""))

    async def _closing(self) -> None:
        await utils.aio.cancel_and_wait(*self._jobs)

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


def streaming(recogniser: stt.STT[Any], vad: VAD, early_s: float, every_s: float,
              emit: Emit | None) -> stt.STT[Any]:
    """The call's streaming STT: transcribing at the speech → silence edge
    (:class:`voice.edge_stt.EdgeSTT`), with interims when ``recogniser`` runs on the process's
    engine pool, ``every_s`` > 0 and there is somewhere to send them."""
    if isinstance(recogniser, PooledSTT) and every_s > 0 and emit is not None:
        return InterimAdapter(stt=recogniser, vad=vad, early_s=early_s, every_s=every_s,
                              emit=emit)
    return EdgeSTT(stt=recogniser, vad=vad, early_s=early_s)
