"""A node's delivery reads asked for ahead (sessions/delivery_reads.py, issue 13 session 12):
what they cost Redis in wake-ups, counted exactly, and that no way of cutting them short loses
or repeats an event."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from launch.redis_server import RedisServer
from sessions import delivery_reads as R
from sessions import delivery_redis as D
from sessions import keys as K
from sessions.bus import Bus

READERS_KEPT = 4
"""Readers kept when the reads ahead are on (off by default: sessions/delivery_redis.py)."""
NEVER_MS = 60_000
"""A block no read in flight waits out in a test that counts reads: one that does answers
nothing (the next waits a block from then), so a process kept off the CPU longer than the
block on a loaded box saw a tick come a read late (it was 2 s: ``[] == [7]`` with the test's
loop held 2.1 s). That test never waits for a block: each of its reads is answered by a tick."""


@pytest.fixture(autouse=True)
def _reads_ahead_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(D, "READERS_KEPT", READERS_KEPT)


async def _tick(r: aioredis.Redis, key: str, n: int) -> bytes:
    rid: bytes = await r.xadd(key, {"s": "s1", "o": n, "e": b'{"n":%d}' % n})
    return rid


async def _reads(r: aioredis.Redis) -> int:
    return int((await r.info("stats"))["total_reads_processed"])


async def test_a_nodes_reads_wake_redis_once_every_thirteen_ticks(
        bus: Bus, redis_server: RedisServer) -> None:
    """20 ticks, each one entry on the node's stream, each read by the node as it comes:
    Redis reads the node's socket once (a send of 13 reads every 13th; 4 times with 5 every
    5th before session 16), not 20 (one read asked again per tick, before session 12). The
    writer's 20 XADDs and the closing INFO are the other 21 reads."""
    r = aioredis.Redis.from_url(redis_server.url)
    key = bus.keys.delivery("nr1")
    try:
        await _tick(r, key, 0)
        rows = await bus.read_delivery("nr1", b"0-0", NEVER_MS)  # starts: the group, 16 reads
        assert [d.offset for d in rows] == [0]
        before = await _reads(r)
        for n in range(1, 21):
            await _tick(r, key, n)
            got = await bus.read_delivery("nr1", rows[-1].id, NEVER_MS)
            assert [d.offset for d in got] == [n]
            rows = got
        assert await _reads(r) - before == 20 + 1 + 1
        assert R.AHEAD - R.LOW + 1 == 13
    finally:
        await r.aclose()


async def test_a_reply_lost_with_its_connection_is_read_again(
        bus: Bus, redis_server: RedisServer) -> None:
    """A read in flight is answered (the group moves past the entry) and its connection dies
    before the node takes the reply: the next call, from the last id the node saw, gets the
    entry again, once, and what came after it."""
    r = aioredis.Redis.from_url(redis_server.url)
    key = bus.keys.delivery("nr2")
    try:
        await _tick(r, key, 0)
        first = await bus.read_delivery("nr2", b"0-0", 2000)
        await _tick(r, key, 1)  # answers the read in flight; nobody takes the reply yet
        await bus._readers["nr2"].conn.disconnect()  # the reply goes with the connection
        await _tick(r, key, 2)
        got = await bus.read_delivery("nr2", first[-1].id, 2000)
        if len(got) < 2:
            got += await bus.read_delivery("nr2", got[-1].id, 2000)
        assert [d.offset for d in got] == [1, 2]
    finally:
        await r.aclose()


async def test_a_read_cut_short_or_restarted_skips_nothing(
        bus: Bus, redis_server: RedisServer) -> None:
    """A read cancelled while blocked, then a call from an earlier id (a node starting over):
    each gets exactly the entries after the id it names."""
    r = aioredis.Redis.from_url(redis_server.url)
    key = bus.keys.delivery("nr3")
    try:
        ids = [await _tick(r, key, n) for n in range(3)]
        rows = await bus.read_delivery("nr3", b"0-0", 2000)
        assert [d.offset for d in rows] == [0, 1, 2]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(bus.read_delivery("nr3", ids[-1], 2000), 0.05)
        assert "nr3" not in bus._readers  # dropped with its reads
        await _tick(r, key, 3)
        assert [d.offset for d in await bus.read_delivery("nr3", ids[-1], 2000)] == [3]
        assert [d.offset for d in await bus.read_delivery("nr3", ids[0], 2000)] == [1, 2, 3]
    finally:
        await r.aclose()


async def test_a_stream_deleted_under_the_reads_is_made_again(
        bus: Bus, redis_server: RedisServer) -> None:
    """The node's stream deleted while its reads wait (the node dropped, Redis flushed):
    the next entry is still read, and a stream the reads made has the delivery TTL."""
    r = aioredis.Redis.from_url(redis_server.url)
    key = bus.keys.delivery("nr4")
    try:
        assert await bus.read_delivery("nr4", b"0-0", 10) == []
        assert 0 < await r.ttl(key) <= K.DELIVERY_TTL  # made by the reads, with its TTL
        await _tick(r, key, 0)
        rows = await bus.read_delivery("nr4", b"0-0", 2000)  # the next read now waits
        await r.delete(key)
        # a later id than any of the old stream's (a new stream's first id may equal the
        # last one read when made within the same millisecond: skipped, as with XREAD)
        rid = await r.xadd(key, {"s": "s1", "o": 7, "e": b"{}"}, id="9999999999999-1")
        rows = await bus.read_delivery("nr4", rows[-1].id, 2000)
        assert [(d.id, d.offset) for d in rows] == [(rid, 7)]
    finally:
        await r.aclose()


async def test_nodes_beyond_the_kept_readers_read_one_at_a_time(
        bus: Bus, redis_server: RedisServer) -> None:
    """A client reading more nodes than it keeps readers for (READERS_KEPT) reads the rest
    with one XREAD at a time on a pool connection: each node gets its own entries, and the
    kept readers are not dropped for it."""
    r = aioredis.Redis.from_url(redis_server.url)
    nodes = [f"nk{i}" for i in range(READERS_KEPT + 2)]
    try:
        for i, node in enumerate(nodes):
            await _tick(r, bus.keys.delivery(node), i)
        for _ in range(2):
            for i, node in enumerate(nodes):
                got = await bus.read_delivery(node, b"0-0", 2000)
                assert [d.offset for d in got] == [i]
        assert set(bus._readers) == set(nodes[:READERS_KEPT])
    finally:
        await r.aclose()
