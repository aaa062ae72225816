"""Speech pushed through a VAD stream, its events collected (tests of voice/shared_vad.py)."""

from __future__ import annotations

import asyncio

import numpy as np
from livekit import rtc
from livekit.agents import vad


async def feed(stream: vad.VADStream, pcm: np.ndarray, frame: int
               ) -> tuple[list[tuple[str, int]], list[float]]:
    """``pcm`` (16 kHz, mono) pushed to ``stream`` in frames of ``frame`` samples, then its input
    ended and the stream closed: each start and end of speech (type, sample index) and every
    window's probability."""
    async def read() -> tuple[list[tuple[str, int]], list[float]]:
        cuts: list[tuple[str, int]] = []
        probs: list[float] = []
        async for ev in stream:
            if ev.type == vad.VADEventType.INFERENCE_DONE:
                probs.append(ev.probability)
            else:
                cuts.append((ev.type.value, ev.samples_index))
        return cuts, probs
    reading = asyncio.create_task(read())
    for i in range(0, len(pcm) - frame + 1, frame):
        stream.push_frame(rtc.AudioFrame(pcm[i:i + frame].tobytes(), 16_000, 1, frame))
    stream.end_input()
    out = await reading
    await stream.aclose()
    return out
