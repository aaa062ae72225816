"""A turn's ending rides the flusher's next tick (sessions/coalescer.py ``ChunkFlusher.carry``,
issue 13, session 14): the tick runs even with no text waiting, takes the text that does wait,
and a tick longer than ``CARRY_WAIT_MAX_S`` is not waited for."""

from __future__ import annotations

import asyncio
from typing import Any

from sessions.coalescer import CARRY_WAIT_MAX_S, START_WAIT_MAX_S, ChunkFlusher, Coalescer


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
    co.add("Hi")  # its tick is far off
    ticker = flusher._ticker
    flusher.carry()
    (sent,) = flusher._sending
    await sent
    assert [len(t) for t in bus.ticks] == [1] and not flusher._sending
    assert ticker is not None
    ticker.cancel()
    await asyncio.gather(ticker, return_exceptions=True)


# A turn's START rides a tick too (session 16, ``carry_start``): the tick due within
# START_WAIT_MAX_S, else one sent at once, which pushes the ticker's next one a window back.


async def test_a_start_far_from_the_tick_sends_one_now_and_pushes_the_next_back() -> None:
    bus = _Bus()
    flusher = ChunkFlusher(bus, interval=0.08)  # type: ignore[arg-type]
    co = Coalescer(flusher, "s", 3, 1, "3:1:ab")
    co.add("Hi")  # the ticker sleeps until its tick, 80 ms off
    ticker = flusher._ticker
    assert ticker is not None
    await asyncio.sleep(0)
    due = flusher._due
    await asyncio.sleep(0.03)  # 50 ms before that tick: more than START_WAIT_MAX_S
    flusher.carry_start()
    (sent,) = flusher._sending
    await sent
    loop = asyncio.get_running_loop()
    assert [len(t) for t in bus.ticks] == [1]  # the text that waited went with it
    assert flusher._due >= due + 0.025  # the next tick a whole window after it
    co.add(" there")
    await ticker  # one tick for the text added since, none in between
    assert [len(t) for t in bus.ticks] == [1, 1] and loop.time() >= due + 0.025


async def test_a_start_with_the_tick_due_soon_waits_for_it() -> None:
    bus = _Bus()
    flusher = ChunkFlusher(bus, interval=START_WAIT_MAX_S / 2)  # type: ignore[arg-type]
    co = Coalescer(flusher, "s", 3, 1, "3:1:ab")
    co.add("Hi")
    await asyncio.sleep(0)  # the ticker sleeps until its tick, due within the wait
    flusher.carry_start()
    assert not flusher._sending  # nothing sent apart: the ticker's tick carries it
    assert flusher._ticker is not None
    await flusher._ticker
    assert [len(t) for t in bus.ticks] == [1]


async def test_a_start_with_no_ticker_is_sent_at_once() -> None:
    bus = _Bus()
    flusher = ChunkFlusher(bus, interval=0.04)  # type: ignore[arg-type]
    flusher.carry_start()  # nothing streams: not kept waiting for a window
    (sent,) = flusher._sending
    await sent
    assert bus.ticks == [[]] and flusher._ticker is None
