"""Entries of a session the worker runs already (sessions/entry_acks.py, issue 13 session 16):
no task of their own, acked together, and the session's loop looks again only when one came
after its ending or RELEASE was sent; every turn still replied, nothing left pending."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis

from launch.redis_server import RedisServer
from sessions import keys as K
from sessions.bus import Bus
from sessions.roles import Claimed
from sessions.runtime import ModelConfig, model_provider
from sessions.worker import Worker, WorkerConfig
from tests.agents_fixtures import fast


async def _until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, what
        await asyncio.sleep(0.005)


def _counted(worker: Worker, calls: Counter[str], *names: str) -> None:
    """Count the worker's calls of the bus's ``names``."""
    for name in names:
        inner = getattr(worker.bus, name)

        def wrap(*a: Any, _inner: Callable[..., Awaitable[Any]] = inner, _name: str = name,
                 **kw: Any) -> Awaitable[Any]:
            calls[_name] += 1
            return _inner(*a, **kw)
        setattr(worker.bus, name, wrap)


async def _replies(bus: Bus, sid: str) -> list[int]:
    events = [orjson.loads(e) for _, e in (await bus.replay(sid, 0, None)).events]
    return [e["turn"] for e in events if e["type"] == "reply"]


async def _pending(r: aioredis.Redis, bus: Bus) -> int:
    return sum([int((await r.xpending(bus.keys.inbound(s, K.DEFAULT_AGENT), K.GROUP))
                    ["pending"]) for s in range(bus.shards)])


async def test_turns_queued_while_their_session_runs_take_no_task_and_no_second_look(
        bus: Bus, redis_server: RedisServer) -> None:
    """Five turns submitted while the session's first one streams: one task runs all six in
    order (before: a task, a slot and an XACK round trip for each of the five entries), their
    five entries acked by the acker, and when the loop ends no second look (before: the five
    pokes made the loop START the first entry's turn again, find it stale, read the pending
    turns and RELEASE, three round trips for nothing)."""
    r = aioredis.Redis.from_url(redis_server.url)
    worker = Worker(bus, fast, model_provider(ModelConfig(demo_word_delay=0.02)),
                    WorkerConfig(block_ms=50))
    spawned: list[str] = []
    spawn = worker._spawn

    def counting(claim: Claimed) -> None:
        spawned.append(claim.session)
        spawn(claim)
    worker._spawn = counting  # type: ignore[method-assign]
    calls: Counter[str] = Counter()
    _counted(worker, calls, "release_lock", "next_turn", "start_attempt")
    try:
        await bus.ensure_groups()
        await bus.open_session("s0", "alice")
        await bus.submit("s0", "m0", "hello there", user="alice")
        run = asyncio.create_task(worker.run())
        await _until(lambda: "s0" in worker.running, "the first turn runs")
        for n in range(1, 6):
            await bus.submit("s0", f"m{n}", f"hello again {n}", user="alice")
        await _until(lambda: worker.acks.sent == 5, "the five entries acked")
        await _until(lambda: not worker.active, "the session's loop ends")
        worker.stopping.set()
        await run
        replies = await _replies(bus, "s0")
        assert len(replies) == 6 and replies == sorted(replies)
        assert spawned == ["s0"]
        assert calls == Counter(start_attempt=6)  # no stale START, next_turn or RELEASE
        assert await _pending(r, bus) == 0
    finally:
        worker.stopping.set()
        await r.aclose()


async def test_an_entry_read_after_the_ending_freed_the_lock_is_looked_at(
        bus: Bus, redis_server: RedisServer) -> None:
    """The race the poke is for: a turn submitted after the session's ending freed the lock,
    its entry read while the loop has not yet seen the ending's answer. The entry is acked
    (the session is still active) and the loop looks again and runs the turn the entry
    names: one START (before, session 17: the first turn's START again, answered stale, then
    a read of the pending turns and the second turn's START, two round trips for nothing)."""
    r = aioredis.Redis.from_url(redis_server.url)
    worker = Worker(bus, fast, model_provider(ModelConfig(demo_word_delay=0)),
                    WorkerConfig(block_ms=50))
    calls: Counter[str] = Counter()
    _counted(worker, calls, "release_lock", "next_turn", "start_attempt")
    end_turn = bus.end_turn
    late = asyncio.Event()

    async def ending_then_a_turn(*a: Any, **kw: Any) -> Any:
        ended = await end_turn(*a, **kw)
        if not late.is_set() and ended.released:
            late.set()
            await bus.submit("s0", "m1", "hello again", user="alice")
            await _until(lambda: "s0" in worker.poked, "the late entry read")
        return ended
    worker.bus.end_turn = ending_then_a_turn  # type: ignore[method-assign]
    try:
        await bus.ensure_groups()
        await bus.open_session("s0", "alice")
        await bus.submit("s0", "m0", "hello there", user="alice")
        run = asyncio.create_task(worker.run())
        await _until(lambda: late.is_set() and not worker.active, "both turns ran")
        worker.stopping.set()
        await run
        assert len(await _replies(bus, "s0")) == 2
        assert calls == Counter(start_attempt=2)  # no stale START, no next_turn
        assert worker.acks.sent == 1
        assert await _pending(r, bus) == 0
    finally:
        worker.stopping.set()
        await r.aclose()


async def test_an_entry_behind_another_workers_turn_is_busy_at_once(
        bus: Bus, redis_server: RedisServer) -> None:
    """Two turns pending and another worker holding the lock (it runs the first): the entry
    of the second, read by this worker, is answered busy by its START (acked, nothing
    written), with no read of the pending turns and no second START (before: START answered
    stale, then the turns were read and the first one's START answered busy)."""
    r = aioredis.Redis.from_url(redis_server.url)
    worker = Worker(bus, fast, model_provider(ModelConfig(demo_word_delay=0)),
                    WorkerConfig(block_ms=50))
    calls: Counter[str] = Counter()
    _counted(worker, calls, "release_lock", "next_turn", "start_attempt")
    try:
        await bus.ensure_groups()
        await bus.open_session("s0", "alice")
        await bus.submit("s0", "m0", "hello there", user="alice")
        second = (await bus.submit("s0", "m1", "hello again", user="alice")).offset
        shard = bus.keys.inbound(K.shard_for("s0", bus.shards), K.DEFAULT_AGENT)
        await r.delete(shard)  # only the second turn's entry, as if the first was taken
        await bus.ensure_groups()
        await r.xadd(shard, {"s": "s0", "o": second})
        await r.set(bus.keys.lock("s0"), "another-worker", px=30_000)
        before = (await bus.replay("s0", 0, None)).events
        await worker.run(burst=True)
        assert calls == Counter(start_attempt=1)
        assert await _pending(r, bus) == 0
        assert (await bus.replay("s0", 0, None)).events == before  # nothing written
        assert await r.xlen(bus.keys.turns("s0")) == 2
        assert await r.get(bus.keys.lock("s0")) == b"another-worker"
    finally:
        await r.aclose()
