"""Turns waiting behind their session's running turn count in the shard's lag (issue 13,
session 17: sessions/held_entries.py): what the edges refuse new turns on past capacity."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from agents import Agent

from launch.redis_server import RedisServer
from sessions import keys as K
from sessions.bus import Bus
from sessions.demo import DemoModel
from sessions.runtime import ModelConfig, model_provider
from sessions.worker import Worker, WorkerConfig

slow = Agent(name="slow", model=DemoModel(word_delay=0.05))
"""The demo agent at 50 ms a word: a turn of ~27 words streams ~1.4 s."""


async def _until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, what
        await asyncio.sleep(0.005)


async def test_turns_waiting_in_a_running_session_stay_in_the_shards_lag(
        bus: Bus, redis_server: RedisServer) -> None:
    """Five turns submitted while the session's first one streams: once the worker has read
    their entries (none unread, its acker idle) the shard's figure counts them while they
    wait (6 with the running turn's; before: 1, their entries acked on reading, so an edge
    never refused a turn however many waited in sessions); each entry is acked once its turn
    ended, every turn replies in order and nothing is left pending."""
    r = aioredis.Redis.from_url(redis_server.url)
    worker = Worker(bus, slow, model_provider(ModelConfig()),
                    WorkerConfig(block_ms=50))
    shard = (K.DEFAULT_AGENT, K.shard_for("s0", bus.shards))
    stream = bus.keys.inbound(shard[1], K.DEFAULT_AGENT)
    unread: list[int] = [-1]
    run = watch = None

    async def read_all() -> None:
        while True:
            groups = await r.xinfo_groups(stream)
            unread[0] = int(groups[0]["lag"] or 0)
            await asyncio.sleep(0.01)
    try:
        await bus.ensure_groups()
        await bus.open_session("s0", "alice")
        await bus.submit("s0", "m0", "hello there", user="alice")
        run = asyncio.create_task(worker.run())
        watch = asyncio.create_task(read_all())
        await _until(lambda: "s0" in worker.running, "the first turn runs")
        for n in range(1, 6):
            await bus.submit("s0", f"m{n}", f"hello again {n}", user="alice")
        await _until(lambda: unread[0] == 0 and worker.acks.task is None
                     and not worker.acks.waiting, "the five entries read, no ack on its way")
        turn = worker.running.get("s0")
        assert turn is not None and turn.turn == 1  # the first turn still streams
        # the running turn's entry (acked with its ending) and the five waiting behind it
        assert (await bus.shard_lags({shard}))[shard] == 6
        await _until(lambda: not worker.active, "the session's loop ends", 30)
        watch.cancel()
        worker.stopping.set()
        await run
        assert worker.acks.sent == 5 and not len(worker.held)
        assert (await bus.shard_lags({shard}))[shard] == 0
        assert int((await r.xpending(stream, K.GROUP))["pending"]) == 0
    finally:
        worker.stopping.set()
        for task in (watch, run):
            if task is not None and not task.done():
                task.cancel()
        await r.aclose()


LONG = " ".join(f"word{i}" for i in range(30))
"""A turn text the demo model echoes word by word."""


async def test_entries_held_past_a_lease_are_kept_not_reclaimed(
        bus: Bus, redis_server: RedisServer) -> None:
    """Turns waiting behind a running one for longer than a lease: the lease keeper claims
    the held entries again with the running one's, so another worker's reclaim finds none of
    them idle (each reclaimed would be a START answered busy there: work for nothing) and
    this worker's own reclaims take none (without the keep: 20 in this test), and every turn
    replies once, with nothing left pending."""
    r = aioredis.Redis.from_url(redis_server.url)
    worker = Worker(bus, slow, model_provider(ModelConfig()),
                    WorkerConfig(block_ms=50, lease_ms=1000))
    reclaimed: list[bytes] = []
    every = bus.reclaim_all

    async def counting(*a: Any, **kw: Any) -> Any:
        claims = await every(*a, **kw)
        reclaimed.extend(c.id for c in claims)
        return claims
    worker.bus.reclaim_all = counting  # type: ignore[method-assign]
    run = None
    try:
        await bus.ensure_groups()
        await bus.open_session("s0", "alice")
        await bus.submit("s0", "m0", LONG, user="alice")  # ~3 s of reply (its words echoed)
        run = asyncio.create_task(worker.run())
        await _until(lambda: "s0" in worker.running, "the first turn runs")
        for n in range(1, 4):
            await bus.submit("s0", f"m{n}", LONG, user="alice")
        await _until(lambda: len(worker.held) == 3, "the three entries held")
        await asyncio.sleep(1.5)  # past a lease
        assert len(worker.held) == 3  # the first turn still streams
        assert await every(worker.inbound, "another-worker", 1000, 10) == []
        await _until(lambda: not worker.active, "the session's loop ends", 60)
        worker.stopping.set()
        await run
        assert reclaimed == []  # nor by this worker (then held again: an XAUTOCLAIM for that)
        replies = [e for e in await _events(bus, "s0") if e["type"] == "reply"]
        assert [e["turn"] for e in replies] == sorted({e["turn"] for e in replies})
        assert len(replies) == 4
        assert int((await r.xpending(bus.keys.inbound(K.shard_for("s0", bus.shards),
                                                       K.DEFAULT_AGENT), K.GROUP))["pending"]) == 0
    finally:
        worker.stopping.set()
        if run is not None and not run.done():
            run.cancel()
        await r.aclose()


async def _events(bus: Bus, sid: str) -> list[dict[str, Any]]:
    return [orjson.loads(e) for _, e in (await bus.replay(sid, 0, None)).events]
