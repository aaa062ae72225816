"""A worker's scripts (issue 13): loaded once at its start (no SCRIPT LOAD on its turns'
first calls), and the lease renewal's EVALSHA sent directly, still loading its script after a
flushed cache."""

from __future__ import annotations

import uuid
from typing import Any

from redis.commands.core import AsyncScript

from launch.redis_server import RedisServer
from sessions.bus import Bus
from sessions.redis_client import connect
from sessions.runtime import ModelConfig, model_provider
from sessions.worker import Worker, WorkerConfig
from tests.agents_fixtures import fast


async def script_loads(r: Any) -> int:
    stats = await r.info("commandstats")
    return int(stats.get("cmdstat_script|load", {}).get("calls", 0))


async def test_a_worker_loads_its_scripts_once_at_start(redis_server: RedisServer) -> None:
    bus = Bus(connect(redis_server.url), prefix=f"t{uuid.uuid4().hex[:10]}", shards=4)
    try:
        await bus.ensure_groups()
        worker = Worker(bus, fast, model_provider(ModelConfig(demo_word_delay=0)),
                        WorkerConfig(block_ms=20, coalesce_ms=1000))
        for s in ("a", "b", "c"):  # three sessions at once: concurrent first calls
            await bus.open_session(s, "alice")
            await bus.submit(s, "m0", "hello there", user="alice")
        await bus.redis.script_flush()  # a fresh Redis (or a failover's new master)
        await bus.redis.config_resetstat()
        await worker.run(burst=True)  # each script loaded at its start, none on a turn
        scripts = {v.sha for v in vars(bus).values() if isinstance(v, AsyncScript)}
        assert len(scripts) >= 8  # the turn's scripts and REMEMBER
        assert await script_loads(bus.redis) == len(scripts)
        assert worker.turns_done == 3
    finally:
        await bus.close()


async def test_renew_lock_direct_evalsha(redis_server: RedisServer) -> None:
    bus = Bus(connect(redis_server.url), prefix=f"t{uuid.uuid4().hex[:10]}", shards=4)
    try:
        await bus.open_session("s", "alice")
        assert await bus.try_lock("s", "w1", 1000)
        assert await bus.renew_lock("s", "w1", 30_000)
        assert 29_000 < await bus.redis.pttl(bus.keys.lock("s")) <= 30_000
        assert not await bus.renew_lock("s", "w2", 30_000)  # not w2's: untouched
        assert await bus.redis.get(bus.keys.lock("s")) == b"w1"
        await bus.redis.script_flush()  # a failover's new master: NOSCRIPT, loaded once
        assert await bus.renew_lock("s", "w1", 40_000)
        assert 39_000 < await bus.redis.pttl(bus.keys.lock("s")) <= 40_000
        assert (await bus.redis.script_exists(bus._renew.sha)) == [True]
    finally:
        await bus.close()
