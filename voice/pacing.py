"""The agent's transcript paced by its average speed, not by a spectral estimate of its audio.

livekit-agents' ``TranscriptSynchronizer`` releases the agent's words as its audio plays. To
pace them it estimates the audio's speaking rate (``SpeakingRateStream``: a 1 s STFT every
0.1 s of the TTS audio, in numpy, per call): at 4 calls that was 14.5-15.9 % of the voice
worker's busy Python samples, as much as Silero (docs/voice.md, "Session 11"). Our
transcripts are written a sentence at a time (:class:`voice.transcripts.SpokenText`): the
synchroniser's own fallback, the segment's average speed (syllables per second of its audio,
what it uses before an estimate exists), is enough. :func:`pace_by_average` gives a call's
synchroniser a detector that estimates nothing.

Version-gated: only for the livekit-agents it was read from (1.8.9, pinned in pyproject.toml);
another version keeps its own detector (and the CPU it costs).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livekit import agents, rtc

log = logging.getLogger("agentia.voice")

READ_FROM = "1.8.9"
"""The livekit-agents version whose synchroniser this was written against."""


class NoRateStream:
    """A speaking-rate stream that takes the audio and estimates nothing (no events): the
    synchroniser paces by the segment's average speed. Holds nothing."""

    def __init__(self) -> None:
        self._ended = asyncio.Event()

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        """The audio is not looked at."""

    def flush(self) -> None:
        """Nothing is held."""

    def end_input(self) -> None:
        self._ended.set()

    async def aclose(self) -> None:
        self._ended.set()

    def __aiter__(self) -> NoRateStream:
        return self

    async def __anext__(self) -> Any:
        await self._ended.wait()
        raise StopAsyncIteration


class NoRateDetector:
    """Stands for livekit-agents' ``SpeakingRateDetector``."""

    def stream(self) -> NoRateStream:
        return NoRateStream()


def pace_by_average(session: Any) -> bool:
    """Give ``session``'s transcript synchroniser (its room I/O's) :class:`NoRateDetector`
    (its current segment a :class:`NoRateStream`; call it right after the session started,
    before the agent speaks); False when there is none or livekit-agents is not the
    version this was read from (nothing changed)."""
    if agents.__version__ != READ_FROM:
        return False
    sync = getattr(getattr(session, "_room_io", None), "_tr_synchronizer", None)
    opts = getattr(sync, "_opts", None)
    if opts is None or not hasattr(opts, "speaking_rate_detector"):
        return False
    opts.speaking_rate_detector = NoRateDetector()
    # the first segment's was made with the synchroniser: nothing was pushed to it yet, and
    # its task ends by itself once its input is ended
    audio = getattr(getattr(sync, "_impl", None), "_audio_data", None)
    old = getattr(audio, "sr_stream", None)
    if audio is not None and old is not None and not isinstance(old, NoRateStream):
        audio.sr_stream = NoRateStream()
        old.end_input()
    return True
