"""A worker's shard reads asked for ahead (sessions/claims_ahead.py, issue 13 session 12): what
they cost Redis in wake-ups, counted exactly; that together they never claim more turns than the
worker has room for; and that stopping leaves nothing claimed that the worker does not know of."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from launch.redis_server import RedisServer
from sessions import claims_ahead as A
from sessions import keys as K
from sessions.bus import Bus, connect
from sessions.claims_ahead import ClaimsAhead
from sessions.roles import Claimed
from sessions.runtime import ModelConfig, model_provider
from sessions.worker import Worker, WorkerConfig
from tests.agents_fixtures import fast


async def _turn(r: aioredis.Redis, bus: Bus, n: int) -> None:
    await r.xadd(bus.keys.inbound(0, K.DEFAULT_AGENT), {"s": f"s{n}", "o": n})


async def _reads(r: aioredis.Redis) -> int:
    return int((await r.info("stats"))["total_reads_processed"])


async def _pending(r: aioredis.Redis, bus: Bus) -> int:
    got = await r.xpending(bus.keys.inbound(0, K.DEFAULT_AGENT), K.GROUP)
    return int(got["pending"])


async def _reader(bus: Bus, consumer: str) -> ClaimsAhead:
    """A reader whose reads in flight never run out of block in a test: a read that waits
    out its block answers nothing (and the next one waits a block from then), so a test
    process kept off the CPU longer than the block on a loaded box would see a turn come a
    read late (it was 2 s: ``[] == ['s7']`` with the test's loop held 2.1 s). The tests
    never wait for a block: every read they take is answered by a turn, or dropped."""
    await bus.ensure_groups()
    ahead = bus.claims_ahead([0], consumer, 60_000)
    assert ahead is not None  # a single Redis
    return ahead


async def test_a_workers_reads_wake_redis_once_every_five_turns(
        bus: Bus, redis_server: RedisServer) -> None:
    """20 turns, each claimed as it comes: Redis reads the worker's socket 4 times (a send of
    5 reads every 5th), not 20 (one XREADGROUP asked again per turn, before). The submitter's
    20 XADDs and the closing INFO are the other 21 reads."""
    r = aioredis.Redis.from_url(redis_server.url)
    ahead = await _reader(bus, "w1")
    try:
        await _turn(r, bus, 0)
        assert [c.session for c in await ahead.claim(256)] == ["s0"]  # 8 reads sent
        before = await _reads(r)
        for n in range(1, 21):
            await _turn(r, bus, n)
            assert [c.session for c in await ahead.claim(256)] == [f"s{n}"]
        assert await _reads(r) - before == 20 + 4 + 1
        assert A.AHEAD - A.LOW + 1 == 5
    finally:
        await ahead.close()
        await r.aclose()


async def test_the_reads_in_flight_claim_no_more_than_the_room(
        bus: Bus, redis_server: RedisServer) -> None:
    """10 turns waiting, room for 3: the reads sent ask for one each, three of them, so Redis
    (which answers all three at once) puts exactly 3 in the worker's pending list, 7 left for
    other workers; the first call returns one, and stopping returns the other two answers
    already arrived (the worker runs or hands them off): none claimed that it does not know."""
    r = aioredis.Redis.from_url(redis_server.url)
    ahead = await _reader(bus, "w2")
    try:
        for n in range(10):
            await _turn(r, bus, n)
        first = await ahead.claim(3)
        assert [c.session for c in first] == ["s0"]
        assert await _pending(r, bus) == 3
        rest = await ahead.close()
        assert [c.session for c in rest] == ["s1", "s2"]
        for n in range(10, 13):  # the reads that were waiting went with the connection
            await _turn(r, bus, n)
        assert await _pending(r, bus) == 3
        assert ahead.conn is None and not ahead.asked
    finally:
        await ahead.close()
        await r.aclose()


async def test_a_dropped_connection_leaves_its_claims_pending_for_reclaim(
        bus: Bus, redis_server: RedisServer) -> None:
    """A read answered while its connection dies: its entry stays in the worker's pending
    list (reclaimed after a lease, as a single read's would), and the same call reads on a new
    connection what comes after."""
    r = aioredis.Redis.from_url(redis_server.url)
    ahead = await _reader(bus, "w3")
    try:
        await _turn(r, bus, 0)
        assert len(await ahead.claim(8)) == 1
        await _turn(r, bus, 1)  # answers the next read in flight; nobody takes its reply
        await ahead.conn.disconnect()
        await _turn(r, bus, 2)
        assert [c.session for c in await ahead.claim(8)] == ["s2"]  # on a new connection
        got = await bus.reclaim(0, "w4", 0, 10)
        assert sorted(c.session for c in got) == ["s0", "s1", "s2"]  # none acked: all pending
    finally:
        await ahead.close()
        await r.aclose()


async def test_a_worker_reading_ahead_runs_every_turn_and_leaves_none_claimed(
        redis_server: RedisServer) -> None:
    """A worker (room for 2, so its reads in flight ask for at most 2) runs 6 sessions' turns
    through its reads ahead and stops (burst): every turn replied to, nothing left in any
    shard's pending list (no read in flight kept a turn it did not run)."""
    bus = Bus(connect(redis_server.url), prefix=f"t{uuid.uuid4().hex[:10]}", shards=4)
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        await bus.ensure_groups()
        worker = Worker(bus, fast, model_provider(ModelConfig(demo_word_delay=0)),
                        WorkerConfig(block_ms=20, concurrency=2))
        for n in range(6):
            await bus.open_session(f"s{n}", "alice")
            await bus.submit(f"s{n}", "m", "hello there", user="alice")
        await worker.run(burst=True)
        for n in range(6):
            events = (await bus.replay(f"s{n}", 0, None)).events
            assert orjson.loads(events[-1][1])["type"] == "reply"
        for shard in range(4):
            got = await r.xpending(bus.keys.inbound(shard, K.DEFAULT_AGENT), K.GROUP)
            assert got["pending"] == 0
    finally:
        await r.aclose()
        await bus.close()


async def test_a_reclaim_takes_only_the_room_the_reads_in_flight_leave(
        redis_server: RedisServer) -> None:
    """Room for 2: a read in flight answered with one turn, another still asking for one, and
    a dead worker's turn due for reclaim. The reclaim takes nothing (the reads in flight hold
    the room), so the worker's pending list never holds more than its 2 (before: 3, the
    reclaim asked for the free capacity less only the turns running). With the reads drained
    and nothing new, the next poll reclaims as many as it has room for, the dead worker's turn
first."""
    bus = Bus(connect(redis_server.url), prefix=f"t{uuid.uuid4().hex[:10]}", shards=1)
    r = aioredis.Redis.from_url(redis_server.url)
    held: list[asyncio.Task[None]] = []
    try:
        await bus.ensure_groups()
        worker = Worker(bus, fast, model_provider(ModelConfig(demo_word_delay=0)),
                        WorkerConfig(block_ms=50, concurrency=2, lease_ms=1))
        spawned: list[str] = []

        def spawn(claim: Claimed) -> None:  # a turn that runs until the test ends
            spawned.append(claim.session)
            held.append(task := asyncio.create_task(asyncio.sleep(60)))
            worker.tasks.add(task)

        worker._spawn = spawn  # type: ignore[method-assign]
        for n in range(3):
            await _turn(r, bus, n)
        assert [c.session for c in await bus.claim([0], "dead", 1, 0)] == ["s0"]
        await asyncio.sleep(0.01)  # s0 idle longer than the 1 ms lease
        ahead = bus.claims_ahead(worker.inbound, worker.name, 2000)
        assert ahead is not None
        worker._last_reclaim = 0.0  # a reclaim is due
        assert await worker._poll(ahead) == 1 and spawned == ["s1"]
        assert sum(ahead.asked) == 1  # the other read: answered with s2, not yet taken
        consumers = {c["name"]: c["pending"] for c in await r.xinfo_consumers(
            bus.keys.inbound(0, K.DEFAULT_AGENT), K.GROUP)}
        assert consumers == {b"dead": 1, worker.name.encode(): 2}
        assert [c.session for c in await ahead.close()] == ["s2"]
        for task in held:
            task.cancel()
        worker.tasks.clear()
        worker._last_reclaim = 0.0
        # all three are idle past the 1 ms lease now (s1, s2: this worker's own, not renewed):
        # the reclaim takes the room, 2, in the stream's order
        assert await worker._poll() == 2 and spawned == ["s1", "s0", "s1"]
    finally:
        for task in held:
            task.cancel()
        await r.aclose()
        await bus.close()


async def _blocked(r: aioredis.Redis) -> int:
    return int((await r.info("clients"))["blocked_clients"])


async def test_a_stop_wakes_the_blocked_read_at_once(redis_server: RedisServer) -> None:
    """A worker whose read blocks for a minute is stopped: it returns within seconds (its read
    answered as a timeout by ``CLIENT UNBLOCK``; before, it waited the whole ``block_ms``,
    ~1 s a stop at the default), and it claims nothing after the stop: a turn sent then stays
    in the stream for the next worker."""
    bus = Bus(connect(redis_server.url), prefix=f"t{uuid.uuid4().hex[:10]}", shards=1)
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        await bus.ensure_groups()
        worker = Worker(bus, fast, model_provider(ModelConfig(demo_word_delay=0)),
                        WorkerConfig(block_ms=60_000))
        before = await _blocked(r)
        run = asyncio.create_task(worker.run())
        for _ in range(1000):  # until its first read is blocked in Redis (10 s at most)
            if await _blocked(r) > before:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the worker's read never blocked")
        worker.stopping.set()
        async with asyncio.timeout(5):
            await run
        await _turn(r, bus, 0)
        assert await _pending(r, bus) == 0 and worker.turns_done == 0
        assert await _blocked(r) == before  # its reads in flight went with their connection
    finally:
        await r.aclose()
        await bus.close()


async def test_a_stop_before_the_readers_id_is_known_still_wakes_it(
        bus: Bus, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stop comes while the reader's connection is being made (its id not known yet, so
    :meth:`ClaimsAhead.wake` cannot unblock it): the reader unblocks its own read once it
    learns its id, and the read (blocking for a minute) ends at once with nothing claimed."""
    ahead = await _reader(bus, "w6")
    ahead.block_ms = 60_000
    pool = ahead.redis.connection_pool
    get = pool.get_connection

    async def woken_meanwhile(*args: Any, **kwargs: Any) -> Any:
        conn = await get(*args, **kwargs)
        if not ahead.woken:  # the reader's connection (the next one is the unblocking call's)
            await ahead.wake()
        return conn

    monkeypatch.setattr(pool, "get_connection", woken_meanwhile)
    try:
        async with asyncio.timeout(5):
            assert await ahead.claim(8) == []
        assert await ahead.claim(8) == []  # woken: nothing more is sent
    finally:
        monkeypatch.undo()
        await ahead.close()


async def test_a_reclaim_of_every_shard_is_one_round_trip_within_the_room(
        redis_server: RedisServer) -> None:
    """A dead worker's turns on three of eight shards: one reclaim takes them all in one Redis
    read (session 17; before, one XAUTOCLAIM round trip per shard, 8 reads: 16 every 7.5 s
    for a worker of two agents' shards while turns flow), each shard given an equal share of
    the room. With less room than shards it goes shard by shard, and takes no more than it."""
    bus = Bus(connect(redis_server.url), prefix=f"t{uuid.uuid4().hex[:10]}", shards=8)
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        await bus.ensure_groups()
        worker = Worker(bus, fast, model_provider(ModelConfig(demo_word_delay=0)),
                        WorkerConfig(block_ms=50, concurrency=16, lease_ms=1))
        spawned: list[str] = []
        worker._spawn = lambda claim: spawned.append(claim.session)  # type: ignore[method-assign]
        for k in (1, 4, 6):
            for n in range(2):
                await r.xadd(bus.keys.inbound(k, K.DEFAULT_AGENT), {"s": f"s{k}.{n}", "o": 1})
        for k in (1, 4, 6):
            assert len(await bus.claim([k], "dead", 10, 0)) == 2
        await asyncio.sleep(0.01)  # idle longer than the 1 ms lease
        before = await _reads(r)
        assert await worker._reclaim() == 6
        assert await _reads(r) - before == 1 + 1  # the reclaim's pipeline, and this INFO
        assert sorted(spawned) == [f"s{k}.{n}" for k in (1, 4, 6) for n in range(2)]
        spawned.clear()
        await asyncio.sleep(0.01)  # now idle in this worker's own list: reclaimable again
        assert await worker._reclaim(room=3) == 3  # fewer than 8: shard by shard, room kept
        assert len(spawned) == 3
    finally:
        await r.aclose()
        await bus.close()
