"""What the chart's worker ScaledObject scales on, read from a real Redis with a real worker.

KEDA's redis-streams triggers read, per inbound stream, the consumer group's ``lag`` (XINFO
GROUPS) and its pending count (XPENDING); the chart sums both over every shard. This checks
that the sum is the backlog of turns however the workers read them, and that lag alone is not:
a worker takes entries as it reads them, so the lag of turns it has taken but not run is 0.
"""

from __future__ import annotations

import asyncio
import os
import time

from launch.redis_server import RedisServer
from sessions.bus import Bus
from sessions.keys import GROUP
from tests.conftest import Proc

TURNS = 12


async def keda_view(bus: Bus) -> tuple[int, int]:
    """(lag, pending) summed over the shards, in one transaction (a consistent snapshot)."""
    async with bus.redis.pipeline(transaction=True) as pipe:
        for shard in range(bus.shards):
            pipe.xinfo_groups(bus.keys.inbound(shard))
            pipe.xpending(bus.keys.inbound(shard), GROUP)
        replies = await pipe.execute()
    lag = pending = 0
    for groups, xpending in zip(replies[::2], replies[1::2], strict=True):
        group = next(g for g in groups if g["name"] == GROUP.encode())
        assert group["lag"] is not None, "Redis could not tell the lag (KEDA would read 0)"
        lag += int(group["lag"])
        pending += int(xpending["pending"])
    return lag, pending


async def test_lag_plus_pending_is_the_backlog(bus: Bus, redis_server: RedisServer,
                                               prefix: str) -> None:
    await bus.ensure_groups()
    for i in range(TURNS):
        await bus.open_session(f"s{i}", "u")
        await bus.submit(f"s{i}", f"c{i}", "hello, how are you today?", user="u")
    assert await keda_view(bus) == (TURNS, 0)
    env = {**os.environ, "AGENTIA_REDIS_URL": redis_server.url, "AGENTIA_REDIS_PREFIX": prefix,
           "AGENTIA_SHARDS": str(bus.shards), "AGENTIA_DEMO_WORD_DELAY": "0.5"}
    env.pop("OPENAI_API_KEY", None)
    worker = Proc(["worker", "--concurrency", "2"], env, "AGENTIA_WORKER_READY")
    try:
        deadline = time.monotonic() + 10
        lag, pending = await keda_view(bus)
        while pending == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            lag, pending = await keda_view(bus)
        assert pending > 0, "the worker took no turn within 10 s"
        # every turn takes seconds (0.5 s a word): none has finished, all are still counted
        assert lag + pending == TURNS, (lag, pending)
        print(f"KEDA's view with one worker (concurrency 2): lag {lag}, pending {pending}")
    finally:
        worker.kill()
        worker.stop()
