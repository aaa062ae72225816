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


async def commands(r: aioredis.Redis, only: str = "") -> int:
    """Commands run so far (``only``: of that one, e.g. ``xadd``)."""
    stats = await r.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items()
               if k != "cmdstat_info" and (not only or k == f"cmdstat_{only}"))


async def run_turns(url: str, n: int, text: str, webhooks: frozenset[str] = frozenset(),
                    only: str = "") -> tuple[int, list[str]]:
    """Commands of ``n`` turns of one session run by a burst worker, and the log's kinds."""
    bus = Bus(connect(url), prefix=f"t{uuid.uuid4().hex[:10]}", shards=4,
              webhook_events=webhooks, webhook_shards=4)
    try:
        await bus.ensure_groups()
        worker = Worker(bus, fast, model_provider(ModelConfig(demo_word_delay=0)),
                        WorkerConfig(block_ms=20, coalesce_ms=1000))
        await bus.open_session("s", "alice")
        for i in range(n):
            await bus.submit("s", f"m{i}", text, user="alice")
        before = await commands(bus.redis, only)
        await worker.run(burst=True)
        spent = await commands(bus.redis, only) - before
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


async def test_webhooks_cost_one_xadd_per_event_and_nothing_when_off(
        redis_server: RedisServer) -> None:
    """The outbox copy (docs/architecture.md "Webhooks: the outbox"): on, one more XADD per
    event of a listed type (here the reply; the user event was submitted before counting),
    sent in the fan-out's pipeline; off, none. (Counted on XADD alone: the worker's polling
    makes the total vary by a command or two between runs.)"""
    off = [await run_turns(redis_server.url, n, "hello there", only="xadd") for n in (1, 11)]
    on = [await run_turns(redis_server.url, n, "hello there", frozenset({"reply", "user"}),
                          only="xadd") for n in (1, 11)]
    per_turn_off = (off[1][0] - off[0][0]) / 10
    per_turn_on = (on[1][0] - on[0][0]) / 10
    assert per_turn_on - per_turn_off == 1, (per_turn_off, per_turn_on)


async def test_the_webhook_cursor_costs_one_script_per_append_and_nothing_when_off(
        redis_server: RedisServer) -> None:
    """The webhook cursor (sessions/webhook_outbox.py): on, one EVAL (ADVANCE: HGET + HSET)
    per fan-out, in its pipeline; the session's mark (ZADD) at most once a minute, here at
    the submit before counting; off, neither."""
    per_turn = {}
    for on in (False, True):
        for cmd in ("eval", "zadd"):
            runs = [await run_turns(redis_server.url, n, "hello there",
                                    frozenset({"reply", "user"}) if on else frozenset(),
                                    only=cmd) for n in (1, 11)]
            per_turn[on, cmd] = (runs[1][0] - runs[0][0]) / 10
    assert per_turn[False, "eval"] == per_turn[False, "zadd"] == 0, per_turn
    # a turn's three appends: turn_start + state thinking, state speaking, state idle + reply
    assert per_turn[True, "eval"] == 3 and per_turn[True, "zadd"] == 0, per_turn
