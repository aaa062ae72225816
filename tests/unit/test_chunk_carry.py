"""A turn's ending rides the flusher's next tick (sessions/coalescer.py ``ChunkFlusher.carry``,
issue 13, session 14): the tick runs even with no text waiting, takes the text that does wait,
and a tick longer than ``CARRY_WAIT_MAX_S`` is not waited for."""

from __future__ import annotations

import asyncio
from typing import Any

from sessions.coalescer import CARRY_WAIT_MAX_S, ChunkFlusher, Coalescer


class _Bus:
    def __init__(self) -> None:
        self.ticks: list[list[Any]] = []

    async def stream_chunks(self, pieces: list[Any]) -> None:
        self.ticks.append(pieces)


async def test_a_carried_tick_runs_without_text() -> None:
    bus = _Bus()
    flusher = ChunkFlusher(bus, interval=0.0)  # type: ignore[arg-type]
    await flusher.flush()
    assert bus.ticks == []  # nothing waits, nothing carried: no tick
    flusher.carry()
    assert flusher._ticker is not None
    await flusher._ticker
    assert bus.ticks == [[]] and flusher._ticker is None


async def test_a_carried_tick_takes_the_text_waiting() -> None:
    bus = _Bus()
    flusher = ChunkFlusher(bus, interval=0.0)  # type: ignore[arg-type]
    co = Coalescer(flusher, "s", 3, 1, "3:1:ab")
    co.add("Hel")
    co.add("lo")
    flusher.carry()
    assert flusher._ticker is not None
    await flusher._ticker
    assert [[(p[0], p[2], p[4]) for p in t] for t in bus.ticks] == [[("s", 1, "")]]
    assert b'"text":"Hello"' in bus.ticks[0][0][3]


async def test_a_long_tick_is_not_waited_for() -> None:
    bus = _Bus()
    flusher = ChunkFlusher(bus, interval=CARRY_WAIT_MAX_S * 10)  # type: ignore[arg-type]
    co = Coalescer(flusher, "s", 3, 1, "3:1:ab")
    co.add("Hi")  # the run's first piece: sent at once (sessions/coalescer.py)
    await asyncio.gather(*flusher._sending)
    co.add(" there")  # its tick is far off
    ticker = flusher._ticker
    flusher.carry()
    (sent,) = flusher._sending
    await sent
    assert [len(t) for t in bus.ticks] == [1, 1] and not flusher._sending
    assert ticker is not None
    ticker.cancel()
    await asyncio.gather(ticker, return_exceptions=True)
