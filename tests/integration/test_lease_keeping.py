"""The leases of the sessions a worker runs, kept by one keeper task (sessions/lease_keeping.py,
issue 13 session 19; a task per session run before): a long turn keeps its lock and entry, a
lock found lost stops the turn, and short turns start no task of the keeper's each."""

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
from tests.agents_fixtures import fast
from tests.counting import TaskCount

slow = Agent(name="slow", model=DemoModel(word_delay=0.05))
LONG = " ".join(f"word{i}" for i in range(30))
"""A turn text the demo model echoes word by word: ~1.5 s of reply at 50 ms a word."""


async def _until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, what
        await asyncio.sleep(0.005)


async def _events(bus: Bus, sid: str) -> list[dict[str, Any]]:
    return [orjson.loads(e) for _, e in (await bus.replay(sid, 0, None)).events]


def _keepers() -> TaskCount:
    """Tasks created while inside whose coroutine is the lease keeper's."""
    return TaskCount(lambda coro: getattr(getattr(coro, "cr_code", None), "co_filename",
                                          "").endswith("lease_keeping.py"))


async def test_short_turns_start_no_keeper_task_each(bus: Bus) -> None:
    """20 sessions' turns, each ended long before its first renewal: one keeper task in all
    (20 before, one per session run) and no renewal."""
    worker = Worker(bus, fast, model_provider(ModelConfig(demo_word_delay=0)),
                    WorkerConfig(block_ms=20))
    renewals = 0
    renew = bus.renew_lock

    async def counted(*a: Any, **kw: Any) -> bool:
        nonlocal renewals
        renewals += 1
        return await renew(*a, **kw)
    worker.bus.renew_lock = counted  # type: ignore[method-assign]
    await bus.ensure_groups()
    for n in range(20):
        await bus.open_session(f"s{n}", "alice")
        await bus.submit(f"s{n}", "m0", "hello there", user="alice")
    with _keepers() as tasks:
        await worker.run(burst=True)
    assert tasks.made == 1, tasks.made
    assert renewals == 0 and not worker.kept and worker.keeper is None
    for n in range(20):
        assert [e["type"] for e in await _events(bus, f"s{n}")].count("reply") == 1


async def test_a_long_turn_keeps_its_lock_and_entry(bus: Bus, redis_server: RedisServer) -> None:
    """A ~1.5 s turn with a 600 ms lease: renewed every ~200 ms, the lock stays the worker's
    all along, another worker's reclaim finds the entry never idle a lease, one reply."""
    r = aioredis.Redis.from_url(redis_server.url)
    worker = Worker(bus, slow, model_provider(ModelConfig()),
                    WorkerConfig(block_ms=50, lease_ms=600))
    run = None
    try:
        await bus.ensure_groups()
        await bus.open_session("s0", "alice")
        await bus.submit("s0", "m0", LONG, user="alice")
        run = asyncio.create_task(worker.run())
        await _until(lambda: "s0" in worker.running, "the turn runs")
        owners: list[Any] = []
        reclaimed = []
        while "s0" in worker.running:
            owners.append(await r.get(bus.keys.lock("s0")))
            reclaimed += await bus.reclaim_all(worker.inbound, "another-worker", 600, 10)
            await asyncio.sleep(0.1)
        while owners and owners[-1] is None:  # freed by the turn's ending
            owners.pop()
        assert len(owners) >= 10  # sampled through the turn's ~1.5 s
        assert set(owners) == {worker.name.encode()}, owners  # never expired, never another's
        assert reclaimed == []
        await _until(lambda: not worker.active, "the session's loop ends")
        worker.stopping.set()
        await run
        assert [e["type"] for e in await _events(bus, "s0")].count("reply") == 1
        assert not worker.kept and not worker.renewing
    finally:
        worker.stopping.set()
        if run is not None and not run.done():
            run.cancel()
        await r.aclose()


async def test_a_lock_found_lost_stops_the_turn(bus: Bus, redis_server: RedisServer) -> None:
    """Another worker's name put on the lock mid-turn: the next renewal (a third of a 600 ms
    lease) finds it lost and stops the turn, which writes no reply while the lock is not
    its own; the turn stays pending: once the lock is free, the session's next turn runs it
    first (a real holder would have, with the entry the worker wrote anew), one reply each."""
    r = aioredis.Redis.from_url(redis_server.url)
    worker = Worker(bus, slow, model_provider(ModelConfig()),
                    WorkerConfig(block_ms=50, lease_ms=600))
    run = None
    try:
        await bus.ensure_groups()
        await bus.open_session("s0", "alice")
        await bus.submit("s0", "m0", LONG, user="alice")
        run = asyncio.create_task(worker.run())
        await _until(lambda: "s0" in worker.running, "the turn runs")
        await asyncio.sleep(0.3)
        await r.set(bus.keys.lock("s0"), "another-worker", px=1500)
        took = time.monotonic()
        await _until(lambda: "s0" not in worker.running, "the turn stopped", 2)
        assert time.monotonic() - took < 0.6
        assert "reply" not in [e["type"] for e in await _events(bus, "s0")]
        await _until(lambda: not worker.active, "the session's loop leaves it")
        await r.delete(bus.keys.lock("s0"))
        await bus.submit("s0", "m1", "hello again", user="alice")
        await _until(lambda: "s0" in worker.running, "the session runs again")
        await _until(lambda: not worker.active, "the session's loop ends", 15)
        worker.stopping.set()
        await run
        replies = [e["turn"] for e in await _events(bus, "s0") if e["type"] == "reply"]
        assert len(replies) == 2 and replies[0] < replies[1], replies
        inbound = bus.keys.inbound(K.shard_for("s0", bus.shards), K.DEFAULT_AGENT)
        assert int((await r.xpending(inbound, K.GROUP))["pending"]) == 0
    finally:
        worker.stopping.set()
        if run is not None and not run.done():
            run.cancel()
        await r.aclose()
