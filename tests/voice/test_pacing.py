"""The agent's transcript paced by its average speed (voice/pacing.py), room-free: livekit-agents'
own synchroniser gets a speaking-rate detector that estimates nothing, for its current segment
and the next ones, and a segment still releases every word of its text as its audio plays."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from livekit import rtc
from livekit.agents.voice import io
from livekit.agents.voice.transcription.synchronizer import TranscriptSynchronizer

from voice.pacing import NoRateStream, pace_by_average


class Sink(io.AudioOutput):
    """An audio output that plays each frame at once."""

    def __init__(self) -> None:
        super().__init__(label="sink", next_in_chain=None, sample_rate=16_000,
                         capabilities=io.AudioOutputCapabilities(pause=False))
        self.pushed = 0.0

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if not self.pushed:
            self.on_playback_started(created_at=time.time())
        self.pushed += frame.duration

    def flush(self) -> None:
        super().flush()

    def clear_buffer(self) -> None:
        pass


class Words(io.TextOutput):
    def __init__(self) -> None:
        super().__init__(label="words", next_in_chain=None)
        self.text = ""

    async def capture_text(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


class Session:
    """What pace_by_average reads of an AgentSession: its room I/O's synchroniser."""

    def __init__(self, sync: TranscriptSynchronizer) -> None:
        self._room_io: Any = type("RoomIO", (), {"_tr_synchronizer": sync})()


async def test_a_segment_releases_every_word_without_the_estimate() -> None:
    words = Words()
    sink = Sink()
    sync = TranscriptSynchronizer(next_in_chain_audio=sink, next_in_chain_text=words)
    first: Any = sync._impl._audio_data.sr_stream
    assert pace_by_average(Session(sync))
    assert isinstance(sync._impl._audio_data.sr_stream, NoRateStream)
    await asyncio.wait_for(first._task, 5)  # the replaced estimator's task has ended
    text = "You said: hello there. How are you?"
    await sync.text_output.capture_text(text)
    sync.text_output.flush()
    for _ in range(50):  # 1 s of audio in 20 ms frames
        await sync.audio_output.capture_frame(rtc.AudioFrame(bytes(640), 16_000, 1, 320))
    sync.audio_output.flush()
    sink.on_playback_finished(playback_position=sink.pushed, interrupted=False)  # played
    await asyncio.wait_for(sync._impl._main_atask, 10)
    assert words.text.split() == text.split()
    sync.rotate_segment()
    await asyncio.wait_for(sync._rotate_segment_atask, 5)  # type: ignore[arg-type]
    assert isinstance(sync._impl._audio_data.sr_stream, NoRateStream)  # the next segment's too
    await sync.aclose()
