"""Transcribe at the speech → silence edge: a non-streaming recogniser started before the
utterance's end is confirmed.

livekit-agents' ``stt.StreamAdapter`` transcribes an utterance when its VAD stream says the
utterance ended, i.e. after ``AGENTIA_VOICE_STT_MIN_SILENCE_S`` (0.2 s) of silence: the
recogniser's time (Whisper base ~0.25-0.5 s) came on top of that wait. :class:`EdgeSTT` starts
the transcription of what was heard so far as soon as the caller has been silent for
``early_s`` (one VAD window of 32 ms by default since session 18, two before, judged by each
window's own probability: Silero's smoothing reports the first silent window as speech), and
sends it as the final transcript the moment it is done if the caller is still silent (and has
been for :data:`SEND_S`), without waiting for the VAD to end the utterance (once the decoding
is faster than that wait, the wait was the transcript's floor). If the caller resumes before it
is done, it is discarded (nothing of a discarded transcript is ever emitted) and the utterance
goes on; if they resume after it was sent, what follows is transcribed as a final of its own
(the session joins the two into one turn: the preemptive turn made of the first is cancelled
when the caller speaks again).

Bounded: a call has at most one transcription running at a time of its own (a discarded one
still finishes in its engine's thread; the next early start waits for it, and the utterance's
end then transcribes the whole utterance the usual way), and an early start is made only while
the process's engine pool has an engine free and no transcription waiting for one (one that
would be discarded must not make another call's utterance wait).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from livekit import rtc
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, stt, utils, vad
from livekit.agents.stt.stream_adapter import StreamAdapterWrapper
from livekit.agents.types import NOT_GIVEN, NotGivenOr

log = logging.getLogger("agentia.voice")

MAX_EARLY_S = 30.0
"""An utterance longer than this (Whisper's window) is not kept twice: it is transcribed at its
end, from the VAD's own buffer, as before."""
SILERO_DEACTIVATION = 0.35
"""Silero's default exit threshold (activation 0.5 - 0.15): a window below it is silence."""
SILERO_SMOOTHING = 0.35
"""livekit-plugins-silero 1.8.9 smooths each window's probability (``ExpFilter(alpha=0.35)``:
``p = 0.35 * previous + 0.65 * raw``) before its rule and its events see it. After speech
(p ~0.99) the first silent window is still p ~0.353, above the exit threshold: the smoothing
alone put the early start one window (32 ms) after the sound stopped. The recogniser undoes it
(:func:`raw_probability`) to find the edge at the first silent window."""
SEND_S = 0.15
"""An early transcript done sooner waits until the caller has been silent this long (at most
the VAD's own min silence) before it is sent as the final: a fast decode must not cut a
sentence at a short pause (a split turn: the agent asked twice, the first cancelled). Silero
counts a real end's silence from ~0.06-0.1 s after the sound stops; a decode started at
``early_s`` rarely ends before this much."""


class EdgeSTT(stt.StreamAdapter):
    """A streaming STT: ``vad`` cuts utterances, ``recogniser`` transcribes each, starting at
    the first ``early_s`` of silence (``early_s`` ≥ the VAD's own min silence: at its end, as
    ``stt.StreamAdapter``)."""

    def __init__(self, *, stt: stt.STT[Any], vad: vad.VAD, early_s: float,
                 send_s: float = SEND_S) -> None:
        super().__init__(stt=stt, vad=vad)
        self.early_s = early_s
        opts = getattr(vad, "_opts", None)
        self.silence_below = float(getattr(opts, "deactivation_threshold", SILERO_DEACTIVATION))
        self.send_s = min(send_s, float(getattr(opts, "min_silence_duration", send_s)))
        """Silence before an early transcript that is done is sent (:data:`SEND_S`)."""

    def stream(self, *, language: NotGivenOr[str] = NOT_GIVEN,
               conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
               ) -> stt.RecognizeStream:
        return EdgeStream(self, language=language, conn_options=conn_options)


class _Utterance:
    """What the VAD stream has heard of the current utterance, and its early transcription."""

    def __init__(self, frames: list[rtc.AudioFrame]) -> None:
        self.frames = list(frames)
        self.heard_s = sum(f.duration for f in frames)
        self.silent_s = 0.0
        """Silence by Silero's rule (the smoothed probability): what ``send_s`` counts."""
        self.quiet_s = 0.0
        """Silence by the window's own (raw) probability: what ``early_s`` counts."""
        self.early: asyncio.Task[stt.SpeechEvent] | None = None
        self.sent = False
        """Its early transcript is the final one already: sent while the caller was silent."""
        self.sent_s = 0.0
        """Seconds of the VAD's utterance whose final transcripts are sent: the caller resumed
        after one, and the rest is a new final of its own."""
        self.early_n = 0
        """Frames of ``frames`` the running early transcription reads."""
        self.ready: stt.SpeechEvent | None = None
        """Its early transcript, done, waiting for ``send_s`` of silence."""
        self.ended = False
        """The VAD ended the utterance (its final is sent from there, not at the edge)."""


class EdgeStream(StreamAdapterWrapper):
    def __init__(self, owner: EdgeSTT, *, language: NotGivenOr[str],
                 conn_options: APIConnectOptions) -> None:
        super().__init__(owner, vad=owner._vad, wrapped_stt=owner._stt, language=language,
                         conn_options=conn_options)
        self._owner = owner
        self._busy: asyncio.Task[stt.SpeechEvent] | None = None
        """The call's transcription still running (early, possibly discarded)."""
        self._last_p = 0.0
        """The VAD's previous (smoothed) probability: :func:`raw_probability` undoes the
        smoothing with it."""
        self.counts = {"utterances": 0, "at_the_edge": 0, "discarded": 0, "sent_early": 0,
                       "resumed": 0}
        """What the stream did (logged once when it closes: the CPU an early start wastes;
        finals sent before the VAD's end, and utterances the caller resumed after one)."""

    async def _run(self) -> None:
        vad_stream = self._vad.stream()

        async def forward() -> None:
            async for frame in self._input_ch:
                if isinstance(frame, self._FlushSentinel):
                    vad_stream.flush()
                else:
                    vad_stream.push_frame(frame)
            vad_stream.end_input()

        tasks = [asyncio.create_task(forward(), name="forward_input"),
                 asyncio.create_task(self._recognise(vad_stream), name="recognize")]
        try:
            await asyncio.gather(*tasks)
        finally:
            await utils.aio.cancel_and_wait(*tasks)
            if self._busy is not None:
                await utils.aio.cancel_and_wait(self._busy)
            await self._closing()
            await vad_stream.aclose()
            log.info("recogniser stream closed: %s", self.counts)

    async def _recognise(self, vad_stream: vad.VADStream) -> None:
        utt: _Utterance | None = None
        async for ev in vad_stream:
            if ev.type == vad.VADEventType.START_OF_SPEECH:
                utt = _Utterance(ev.frames)
                self._started(ev)
                self._event_ch.send_nowait(stt.SpeechEvent(stt.SpeechEventType.START_OF_SPEECH))
            elif ev.type == vad.VADEventType.INFERENCE_DONE:
                raw, self._last_p = raw_probability(ev.probability, self._last_p), ev.probability
                if ev.speaking and utt is not None:
                    self._heard(utt, ev, raw)
                self._inferred(ev)
            elif ev.type == vad.VADEventType.END_OF_SPEECH:
                await self._final(utt, ev)
                utt = None

    # hooks for a stream that does more with the utterances (voice.interim): no-ops here
    def _started(self, ev: vad.VADEvent) -> None:
        """The VAD heard speech begin (``ev.frames``: the audio it kept from before)."""

    def _inferred(self, ev: vad.VADEvent) -> None:
        """One more VAD window (``ev.frames``, ``ev.speech_duration``)."""

    def _ending(self) -> None:
        """The utterance ended: its final transcription starts."""

    def _ended(self, text: str) -> None:
        """Its final transcription is done (``text``: "" when it gave none or failed)."""

    async def _closing(self) -> None:
        """The stream closes."""

    def _heard(self, utt: _Utterance, ev: vad.VADEvent, raw: float) -> None:
        """One more VAD window of the utterance (``raw``: its own probability): start the
        early transcription at the edge, discard it if the caller resumes (or, when it was
        sent already, make the rest an utterance of its own)."""
        utt.heard_s += sum(f.duration for f in ev.frames)
        if utt.heard_s > MAX_EARLY_S:  # bounded: the VAD's buffer has it all
            utt.frames, utt.early = [], None
            return
        utt.frames.extend(ev.frames)
        below = self._owner.silence_below
        if ev.probability > below and raw > below:  # speech (Silero's rule and the window's)
            utt.silent_s = utt.quiet_s = 0.0
            if utt.sent:  # resumed after its final: the rest is transcribed on its own
                self._resumed(utt, ev)
            elif utt.early is not None:  # resumed: that transcript was of half an utterance
                utt.early = utt.ready = None
                self.counts["discarded"] += 1
            return
        duration = sum(f.duration for f in ev.frames)
        utt.quiet_s += duration  # a silent window (the smoothed probability may lag it)
        utt.silent_s = utt.silent_s + duration if ev.probability <= below else 0.0
        if utt.ready is not None and utt.silent_s >= self._owner.send_s:
            self._send_early(utt, utt.ready)
            return
        free = self._busy is None or self._busy.done()
        pool = getattr(self._owner._stt, "pool", None)  # the process's engines (voice.engines)
        if pool is not None and not pool.idle():
            free = False  # a guess must not make another call's utterance wait for an engine
        if (utt.early is None and not utt.sent and free
                and utt.quiet_s >= self._owner.early_s):
            utt.early_n = len(utt.frames)
            utt.early = self._busy = asyncio.create_task(self._early(utt, list(utt.frames)))
            utt.early.add_done_callback(_retrieve)

    def _resumed(self, utt: _Utterance, ev: vad.VADEvent) -> None:
        """The caller speaks again after the utterance's final was sent: what follows the
        audio that final transcribed is a new utterance for the recogniser (the session joins
        the two finals into one turn, as two utterances of one turn)."""
        utt.sent_s += sum(f.duration for f in utt.frames[:utt.early_n])
        utt.frames = utt.frames[utt.early_n:]
        utt.heard_s = sum(f.duration for f in utt.frames)
        utt.sent, utt.early = False, None
        self.counts["resumed"] += 1
        self._started(ev)

    async def _early(self, utt: _Utterance, frames: list[rtc.AudioFrame]) -> stt.SpeechEvent:
        """The early transcription; sent as the final at once if the caller is still silent
        (not waiting for the VAD's end of the utterance, ``voice_stt_min_silence_s``)."""
        t_event = await self._transcribe(frames)
        if utt.early is asyncio.current_task() and not utt.ended:  # not discarded, not ended
            if utt.silent_s >= self._owner.send_s:
                self._send_early(utt, t_event)
            else:  # the next silent windows send it (_heard), or the VAD's end (_final)
                utt.ready = t_event
        return t_event

    def _send_early(self, utt: _Utterance, t_event: stt.SpeechEvent) -> None:
        utt.sent, utt.ready = True, None
        self.counts["sent_early"] += 1
        self._ending()
        self._ended(self._send(t_event, time.time() - utt.silent_s))

    async def _final(self, utt: _Utterance | None, ev: vad.VADEvent) -> None:
        speech_end_time = time.time() - ev.silence_duration - ev.inference_duration
        self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH,
                                                   speech_end_time=speech_end_time))
        self.counts["utterances"] += 1
        if utt is not None:
            utt.ended = True
            if utt.sent:  # its final is out already, nothing heard since
                self.counts["at_the_edge"] += 1
                return
        self._ending()
        early = utt.early if utt is not None else None
        text = ""
        try:
            if early is not None:
                self.counts["at_the_edge"] += 1
                t_event = await early
            else:
                t_event = await self._transcribe(_rest(utt, ev.frames))
            text = self._send(t_event, speech_end_time)
        finally:
            self._ended(text)

    def _send(self, t_event: stt.SpeechEvent, speech_end_time: float) -> str:
        """Send the final transcript ``t_event`` has, if any; its text ("" if none)."""
        if not (t_event.alternatives and t_event.alternatives[0].text):
            return ""
        self._event_ch.send_nowait(stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT, alternatives=[t_event.alternatives[0]],
            speech_end_time=t_event.speech_end_time or speech_end_time))
        return t_event.alternatives[0].text

    async def _transcribe(self, frames: list[rtc.AudioFrame]) -> stt.SpeechEvent:
        return await self._wrapped_stt.recognize(
            buffer=utils.merge_frames(frames), language=self._language,
            conn_options=self._wrapped_stt_conn_options)


def raw_probability(p: float, previous: float) -> float:
    """A window's own speech probability from the smoothed ``p`` Silero's stream reports and
    the ``previous`` window's (:data:`SILERO_SMOOTHING`). Exact for Silero's stream, except
    the first window after a flush (its filter restarts)."""
    return (p - SILERO_SMOOTHING * previous) / (1.0 - SILERO_SMOOTHING)


def _rest(utt: _Utterance | None, frames: list[rtc.AudioFrame]) -> list[rtc.AudioFrame]:
    """What to transcribe at the utterance's end (``frames``: the VAD's whole utterance): all
    of it, or what follows the part whose final was sent already."""
    if utt is None or not utt.sent_s:
        return frames
    if utt.frames:
        return utt.frames
    skip, out = utt.sent_s, []  # past MAX_EARLY_S: the VAD's buffer, less the part sent
    for f in frames:
        if skip > 0:
            skip -= f.duration
        else:
            out.append(f)
    return out


def _retrieve(task: asyncio.Task[Any]) -> None:
    """A discarded transcription's failure is not the call's: read it so asyncio does not log
    it as never retrieved (the utterance's own transcription reports failures)."""
    if not task.cancelled():
        task.exception()
