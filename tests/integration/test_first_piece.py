"""A turn's first piece of text does not wait for the worker's tick (sessions/coalescer.py,
issue 16 session 17): it reaches the node delivering the session at once, the rest of the turn
still goes one piece per tick; on a real Redis."""

from __future__ import annotations

import asyncio

import orjson

from sessions.bus import Bus
from sessions.coalescer import ChunkFlusher, Coalescer
from sessions.delivery_entries import delivered
from sessions.roles import Delivered

TICK_S = 1.0
"""Long, so that "before the tick" has a wide margin on a loaded machine."""


async def _chunks(bus: Bus, node: str, after: bytes, block_ms: int) -> list[Delivered]:
    """The chunks of ``node``'s delivery stream after ``after``, waiting up to ``block_ms``
    (a plain XREAD: no reader reading ahead between the test's steps)."""
    res = await bus.redis.xread({bus.keys.delivery(node): after}, count=100, block=block_ms)
    return [d for _stream, rows in res or [] for rid, f in rows for d in delivered(rid, f)
            if d.chunk is not None]


async def test_the_first_piece_goes_before_the_tick_and_the_rest_coalesce(bus: Bus) -> None:
    await bus.heartbeat_node("nfp")
    await bus.open_session("fp1", "ann", "nfp")
    sub = await bus.submit("fp1", "m1", "hi", user="ann")
    last = (await bus.redis.xrevrange(bus.keys.delivery("nfp"), count=1))[0][0]  # the submit
    flusher = ChunkFlusher(bus, TICK_S)
    co = Coalescer(flusher, "fp1", sub.offset, 1, f"{sub.offset}:1:ab12")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    co.add("You")
    first = await _chunks(bus, "nfp", last, int(TICK_S * 500))
    took = loop.time() - t0
    assert [(d.chunk.seq, orjson.loads(d.event)["text"]) for d in first if d.chunk] == [
        (1, "You")], f"nothing before the tick ({took:.2f} s)"
    await asyncio.sleep(t0 + TICK_S / 2 - loop.time())  # the model's next words, later
    co.add(" said:")
    co.add(" hi")
    assert await _chunks(bus, "nfp", first[-1].id, 100) == []  # the rest waits for the tick
    rest = await _chunks(bus, "nfp", first[-1].id, int(TICK_S * 2000))
    took = loop.time() - t0
    assert [(d.chunk.seq, orjson.loads(d.event)["text"]) for d in rest if d.chunk] == [
        (2, " said: hi")]
    # the tick is the first piece's (a tick after it), not one started by the second piece
    assert took < TICK_S * 1.3, f"the rest came {took:.2f} s after the first piece"


async def test_only_the_first_piece_of_each_run_goes_at_once(bus: Bus) -> None:
    """Two turns starting together share one tick sent at once; a piece after a run's first
    waits for the tick even when no other tick is pending."""
    await bus.heartbeat_node("nfq")
    subs = []
    for sid in ("fq1", "fq2"):
        await bus.open_session(sid, "ann", "nfq")
        subs.append(await bus.submit(sid, "m1", "hi", user="ann"))
    last = (await bus.redis.xrevrange(bus.keys.delivery("nfq"), count=1))[0][0]
    flusher = ChunkFlusher(bus, TICK_S)
    a, b = (Coalescer(flusher, sid, s.offset, 1, f"{s.offset}:1:cd34")
            for sid, s in zip(("fq1", "fq2"), subs, strict=True))
    a.add("One")
    b.add("Two")
    assert len(flusher._sending) == 1  # one tick at once takes both first pieces
    await asyncio.gather(*flusher._sending)
    raw = await bus.redis.xrange(bus.keys.delivery("nfq"), f"({last.decode()}", "+")
    assert len(raw) == 1  # both in one entry: one round trip
    a.add(" more")
    assert not flusher._sending  # not a first piece: it waits for the tick
    assert flusher._ticker is not None
    flusher._ticker.cancel()
    await asyncio.gather(flusher._ticker, return_exceptions=True)
