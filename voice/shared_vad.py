"""One Silero stream per call: the recogniser's VAD decides on the turn VAD's inferences.

A call ran two Silero streams over the same audio (issue 16's profile: 31 % of the voice
worker's Python threads at 4 calls): livekit-agents' turn VAD (``AGENTIA_VOICE_MIN_SILENCE_S``,
0.35 s) and the recogniser's (:class:`voice.edge_stt.EdgeSTT`, which cuts the utterances for
Whisper at ``AGENTIA_VOICE_STT_MIN_SILENCE_S``, 0.2 s). They differ only in their silence: the
per-window work (resampling 48 → 16 kHz, combining frames, the ONNX inference, the smoothing)
was done twice. Now the turn VAD's stream (:class:`TurnVAD`) hands each inference (its smoothed
probability and the window's audio at the input rate) to the call's :class:`Tap`, and the
recogniser's stream (:class:`FollowerVAD`) runs Silero's own start/end rule on it with its own
options: the same decisions a second stream makes, without its resampler and inference.

Muted audio: while livekit-agents discards the caller's audio for the recogniser (its
echo-canceller warm-up, uninterruptible speech) it pushes silence to the STT and the real
audio to the VAD. The follower reads its own input for that: a window that arrives while its
input is digital silence counts as silence (probability 0, zero samples), as a stream of its
own would have heard it (at the window's edges within one window of the leader's lag).

The turn's end of speech (session 18): the turn VAD counts its ``AGENTIA_VOICE_MIN_SILENCE_S``
of silence by each window's own probability (:class:`_TurnFilter`: Silero's smoothing undone
while the caller speaks, as the recogniser's early start counts since session 13), so the turn
ends one window (32 ms) sooner after the sound stops; its start of speech (barge-in, a caller
who resumes) is Silero's, on the smoothed probability, and every event (the tap's too) carries
the smoothed probability, as before.

Bounded: a tap holds the follower streams of one call (one at a time in practice; a stream
leaves it when it closes), each follower's speech buffer is Silero's
(``max_buffered_speech`` + the prefix padding, then it stops growing, as Silero's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import utils, vad
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import is_given
from livekit.plugins import silero
from livekit.plugins.silero import onnx_model

log = logging.getLogger("agentia.voice")

WINDOW_S = 0.032
"""Silero's window (512 samples at 16 kHz, 256 at 8 kHz): the time one inference covers."""
SMOOTHING = 0.35
"""livekit-plugins-silero 1.8.9's smoothing, ``ExpFilter(alpha=0.35)``."""
MAX_FOLLOWERS = 4
"""Follower streams one tap serves at most (a call's recogniser has one at a time)."""


class Tap:
    """One call's link from the turn VAD's stream to the recogniser's."""

    def __init__(self) -> None:
        self.followers: list[FollowerStream] = []

    def add(self, stream: FollowerStream) -> None:
        if len(self.followers) >= MAX_FOLLOWERS:  # bounded: the oldest gets no more windows
            self.followers.pop(0)
        self.followers.append(stream)

    def discard(self, stream: FollowerStream) -> None:
        if stream in self.followers:
            self.followers.remove(stream)

    def publish(self, ev: vad.VADEvent) -> None:
        for stream in list(self.followers):
            stream.window(ev)


class TurnVAD(silero.VAD):
    """A call's turn VAD on the process's Silero session, whose streams feed ``tap``;
    ``inline``: each window's inference runs in the stream's own task (:class:`_Inline`)."""

    def __init__(self, shared: silero.VAD, tap: Tap, inline: bool = True) -> None:
        super().__init__(session=shared._onnx_session, opts=dataclasses.replace(shared._opts))
        self.tap = tap
        self.inline = inline

    def stream(self) -> silero.VADStream:
        stream = _TappedStream(self, self._opts, onnx_model.OnnxModel(
            onnx_session=self._onnx_session, sample_rate=self._opts.sample_rate), self.tap)
        if self.inline:
            stream._loop = _Inline()  # type: ignore[assignment]
        self._streams.add(stream)
        return stream


class _Inline:
    """Stands for the event loop a Silero stream runs its inference through
    (``self._loop.run_in_executor(None, model, window)``, its only use of it): the inference
    runs at once, in the stream's task. One window is ~0.3 ms of onnxruntime (one thread);
    through the executor each of the ~31 windows a second of every call cost a hand-off to a
    pool thread and a wake-up of the call's loop to take the result back."""

    def run_in_executor(self, _executor: Any, fn: Callable[..., Any],
                        *args: Any) -> asyncio.Future[Any]:
        done = asyncio.get_running_loop().create_future()
        done.set_result(fn(*args))
        return done


class _TappedStream(silero.VADStream):
    """Silero's stream; each inference is also handed to the tap as it is read. Its rule sees
    :class:`_TurnFilter`'s probability (the end of speech counted per window); its events the
    smoothed one."""

    def __init__(self, owner: TurnVAD, opts: Any, model: onnx_model.OnnxModel,
                 tap: Tap) -> None:
        self._smoothed: deque[float] = deque()
        """The smoothed probability of each window whose event is not read yet, in order (one
        per ``INFERENCE_DONE``: as many as the stream's event channel holds)."""
        super().__init__(owner, opts, model)
        self._tap = tap

    @property
    def _exp_filter(self) -> utils.ExpFilter:
        return self._turn_filter

    @_exp_filter.setter
    def _exp_filter(self, smoothing: utils.ExpFilter) -> None:
        """Silero sets a new filter at the start and at each flush (its rule restarts too)."""
        self._turn_filter = _TurnFilter(smoothing, self)

    async def __anext__(self) -> vad.VADEvent:
        ev = await super().__anext__()
        if ev.type == vad.VADEventType.INFERENCE_DONE:
            if self._smoothed:
                ev.probability = self._smoothed.popleft()
            self._tap.publish(ev)
        return ev


class _TurnFilter(utils.ExpFilter):
    """Silero's smoothing (``ExpFilter(alpha=0.35)``) as the turn VAD's rule sees it, except
    while the caller speaks: then each window's own probability, so the silence that ends the
    turn is counted from the first silent window (the smoothed one reports it at ~0.35, still
    speech, and ended the turn one window later). Whether the caller speaks is Silero's rule
    (``VADStream._main_task``) run here on the probabilities returned: the same start of
    speech, on the smoothed probability, as before."""

    def __init__(self, smoothing: utils.ExpFilter, stream: _TappedStream) -> None:
        super().__init__(alpha=SMOOTHING)
        self.smoothing = smoothing
        self.stream = stream
        self.speaking = False
        self.above_s = self.below_s = 0.0

    def apply(self, exp: float, sample: NotGivenOr[float] = NOT_GIVEN) -> float:
        if not is_given(sample):  # Silero's stream passes each window's probability
            return self.smoothing.apply(exp=exp)
        smoothed = self.smoothing.apply(exp=exp, sample=sample)
        self.stream._smoothed.append(smoothed)
        p = sample if self.speaking else smoothed
        opts = self.stream._opts
        window_s = self.stream._model.window_size_samples / opts.sample_rate
        if p >= opts.activation_threshold or (self.speaking and p > opts.deactivation_threshold):
            self.above_s += window_s
            self.below_s = 0.0
            if not self.speaking and self.above_s >= opts.min_speech_duration:
                self.speaking = True
        else:
            self.below_s += window_s
            self.above_s = 0.0
            if self.speaking and self.below_s >= opts.min_silence_duration:
                self.speaking = False
        return p


class FollowerVAD(vad.VAD):
    """The recogniser's VAD: Silero's rule with ``opts`` on the inferences of ``tap``."""

    def __init__(self, tap: Tap, like: silero.VAD, **opts: Any) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=WINDOW_S))
        self.tap = tap
        self._opts = dataclasses.replace(like._opts, **opts)

    @property
    def model(self) -> str:
        return "silero"

    @property
    def provider(self) -> str:
        return "ONNX (the turn VAD's inferences)"

    @property
    def min_silence_duration(self) -> float:
        return float(self._opts.min_silence_duration)

    def stream(self) -> FollowerStream:
        return FollowerStream(self, self.tap)


class FollowerStream(vad.VADStream):
    """Silero's stream loop less the inference: its own input only says whether the audio is
    muted; the windows come from the tap (:meth:`window`), on the same event loop."""

    def __init__(self, owner: FollowerVAD, tap: Tap) -> None:
        super().__init__(owner)
        self._opts = owner._opts
        self._tap = tap
        self._muted = False
        self._decide = Decider(self._opts)
        tap.add(self)

    async def _main_task(self) -> None:
        try:
            async for item in self._input_ch:
                if isinstance(item, rtc.AudioFrame):
                    self._muted = not np.asarray(item.data).any()
                else:  # a flush: a hard segment boundary
                    self._decide = Decider(self._opts)
        finally:
            self._tap.discard(self)

    def window(self, ev: vad.VADEvent) -> None:
        """One inference of the turn VAD's stream: this stream's events for it."""
        if self._event_ch.closed or not ev.frames:
            return
        frame, p = ev.frames[0], ev.probability
        if self._muted:
            frame = rtc.AudioFrame(bytes(len(frame.data) * 2), frame.sample_rate, 1,
                                   frame.samples_per_channel)
            p = 0.0
        for out in self._decide.window(p, frame, ev.inference_duration):
            self._event_ch.send_nowait(out)


class Decider:
    """Silero's start/end-of-speech rule (livekit-plugins-silero 1.8.9, ``VADStream._main_task``)
    on a smoothed probability per window, with its speech buffer: loop-free."""

    def __init__(self, opts: Any) -> None:
        self.opts = opts
        self.speaking = False
        self.speech_s = self.silence_s = 0.0
        self.above_s = self.below_s = 0.0
        self.samples = 0
        self.timestamp = 0.0
        self.buffer = bytearray()
        self.rate = 0
        self._full_warned = False

    def window(self, p: float, frame: rtc.AudioFrame, inference_s: float = 0.0
               ) -> list[vad.VADEvent]:
        """The events of one window (``frame``: its audio at the input rate)."""
        self.rate = frame.sample_rate
        self._keep(frame)
        self.samples += int(WINDOW_S * self.opts.sample_rate)
        self.timestamp += WINDOW_S
        if self.speaking:
            self.speech_s += WINDOW_S
        else:
            self.silence_s += WINDOW_S
        out = [self._event(vad.VADEventType.INFERENCE_DONE, frames=[frame], probability=p,
                           inference_duration=inference_s, speaking=self.speaking,
                           raw_accumulated_silence=self.below_s,
                           raw_accumulated_speech=self.above_s)]
        if p >= self.opts.activation_threshold or (
                self.speaking and p > self.opts.deactivation_threshold):
            self.above_s += WINDOW_S
            self.below_s = 0.0
            if not self.speaking and self.above_s >= self.opts.min_speech_duration:
                self.speaking, self.silence_s, self.speech_s = True, 0.0, self.above_s
                out.append(self._event(vad.VADEventType.START_OF_SPEECH,
                                       frames=[self._speech()], speaking=True))
            return out
        self.below_s += WINDOW_S
        self.above_s = 0.0
        if not self.speaking:
            self._rewind()
        elif self.below_s >= self.opts.min_silence_duration:
            self.speaking, self.silence_s = False, self.below_s
            out.append(self._event(vad.VADEventType.END_OF_SPEECH, frames=[self._speech()],
                                   speech_duration=max(0.0, self.speech_s - self.below_s)))
            self.speech_s = 0.0
            self._rewind()
        return out

    def _event(self, kind: vad.VADEventType, **fields: Any) -> vad.VADEvent:
        fields.setdefault("speech_duration", self.speech_s)
        return vad.VADEvent(type=kind, samples_index=self.samples, timestamp=self.timestamp,
                            silence_duration=self.silence_s, **fields)

    def _keep(self, frame: rtc.AudioFrame) -> None:
        """The window's audio into the speech buffer, up to Silero's bound."""
        cap = 2 * (int(self.opts.max_buffered_speech * self.rate) + self._prefix())
        room = cap - len(self.buffer)
        if room > 0:
            self.buffer += bytes(frame.data)[:room]
        elif not self._full_warned:
            self._full_warned = True
            log.warning("max_buffered_speech reached: the rest of this utterance is not kept")

    def _prefix(self) -> int:
        return int(self.opts.prefix_padding_duration * self.rate)

    def _rewind(self) -> None:
        """Keep only the prefix padding (Silero's ``_reset_write_cursor``)."""
        keep = 2 * self._prefix()
        if len(self.buffer) > keep:
            del self.buffer[:len(self.buffer) - keep]
            self._full_warned = False

    def _speech(self) -> rtc.AudioFrame:
        return rtc.AudioFrame(bytes(self.buffer), self.rate, 1, len(self.buffer) // 2)
