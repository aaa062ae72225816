"""What a turn costs Redis on the worker side (issue 13's budget, kept by issue 14's events),
counted with INFO commandstats (a script's inner calls included) on a real Redis: the commands of
eleven turns less those of one, over ten, so the worker's start and polling cancel out."""

from __future__ import annotations

import uuid
from collections import Counter

import orjson
import pytest
import redis.asyncio as aioredis

from launch.redis_server import RedisServer
from sessions.bus import Bus, connect
from sessions.runtime import ModelConfig, model_provider
from sessions.worker import Worker, WorkerConfig
from tests.agents_fixtures import fast

BUDGET = {"hello there": 64, "what is 6 * 7": 93}
"""Commands per turn with no node delivering the session. Measured 60 and 88-89 (issue 14: 46
and 63 before its state and tool events); docs/architecture.md "One turn"."""


async def commands(r: aioredis.Redis) -> int:
    stats = await r.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


async def run_turns(url: str, n: int, text: str) -> tuple[int, list[str]]:
    """Commands of ``n`` turns of one session run by a burst worker, and the log's kinds."""
    bus = Bus(connect(url), prefix=f"t{uuid.uuid4().hex[:10]}", shards=4)
    try:
        await bus.ensure_groups()
        worker = Worker(bus, fast, model_provider(ModelConfig(demo_word_delay=0)),
                        WorkerConfig(block_ms=20, coalesce_ms=1000))
        await bus.open_session("s", "alice")
        for i in range(n):
            await bus.submit("s", f"m{i}", text, user="alice")
        before = await commands(bus.redis)
        await worker.run(burst=True)
        spent = await commands(bus.redis) - before
        log = [orjson.loads(e) for _, e in (await bus.replay("s", 0, None)).events]
        return spent, [f"state:{e['state']}" if e["type"] == "state" else e["type"]
                       for e in log if e["type"] != "user"]
    finally:
        await bus.close()


@pytest.mark.parametrize("text", list(BUDGET))
async def test_a_turn_stays_within_its_command_budget(redis_server: RedisServer,
                                                      text: str) -> None:
    one, kinds = await run_turns(redis_server.url, 1, text)
    eleven, _ = await run_turns(redis_server.url, 11, text)
    per_turn = (eleven - one) / 10
    tools = ["state:tool", "tool_call", "tool_result"] if "6 * 7" in text else []
    assert kinds == ["turn_start", "state:thinking", *tools, "state:speaking", "state:idle",
                     "reply"]
    assert Counter(kinds)["state:idle"] == 1
    print(f"{text!r}: {per_turn:.1f} Redis commands per turn")
    assert 0 < per_turn <= BUDGET[text]
