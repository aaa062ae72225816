"""The worker's next tick is due a window after the last tick sent, whatever sent it
(sessions/coalescer.py ``ChunkFlusher._due``, issue 13 session 19): a turn's first piece sent at
once takes every piece waiting, and the ticker does not send another one soon after it."""

from __future__ import annotations

import asyncio
from typing import Any

from sessions.coalescer import ChunkFlusher, Coalescer

TICK_S = 0.2


class _Bus:
    def __init__(self) -> None:
        self.ticks: list[tuple[float, list[Any]]] = []
        self.sent = asyncio.Event()

    async def stream_chunks(self, pieces: list[Any]) -> None:
        self.ticks.append((asyncio.get_running_loop().time(), pieces))
        self.sent.set()

    async def until(self, n: int) -> None:
        """Until ``n`` ticks were sent."""
        while len(self.ticks) < n:
            self.sent.clear()
            await asyncio.wait_for(self.sent.wait(), 5)


async def test_a_first_pieces_tick_moves_the_next_tick() -> None:
    """Turn a streams a word every eighth of a tick; half a tick after one of the ticker's
    ticks, turn b's first piece goes at once with a's words; the ticker's next tick comes a
    whole tick after that one, not half a tick after."""
    bus = _Bus()
    flusher = ChunkFlusher(bus, TICK_S)  # type: ignore[arg-type]
    a = Coalescer(flusher, "a", 1, 1, "1:1:aa")

    async def stream() -> None:
        while True:
            a.add(" word")
            await asyncio.sleep(TICK_S / 8)

    words = asyncio.create_task(stream())
    try:
        await bus.until(3)  # a's first piece at once, then the ticker's ticks
        await asyncio.sleep(TICK_S / 2)
        b = Coalescer(flusher, "b", 1, 1, "1:1:bb")
        b.add("Hi")  # b's first piece: at once, with a's words
        await asyncio.gather(*flusher._sending)
        at_once = len(bus.ticks) - 1
        assert sorted(p[0] for p in bus.ticks[at_once][1]) == ["a", "b"]
        await bus.until(at_once + 2)
    finally:
        words.cancel()
        await asyncio.gather(words, return_exceptions=True)
    gap = bus.ticks[at_once + 1][0] - bus.ticks[at_once][0]
    assert gap >= TICK_S * 0.99, f"the ticker's tick came {gap:.3f} s after the one sent at once"
    if flusher._ticker is not None:
        flusher._ticker.cancel()
        await asyncio.gather(flusher._ticker, return_exceptions=True)
