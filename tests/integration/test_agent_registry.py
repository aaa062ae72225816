"""The agent registry in Redis (sessions/agents_redis.py) and a session's agent (OPEN,
SUBMIT), against a real Redis with a unique prefix per test."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from launch.redis_server import RedisServer
from sessions import keys as K
from sessions.bus import Bus, connect
from sessions.errors import AgentMismatch, UnknownAgent


def _info(name: str, order: int) -> dict[str, object]:
    return {"name": name, "description": f"the {name}", "tools": [], "order": order}


async def test_workers_publish_in_order_and_stale_entries_drop_out(
        bus: Bus, redis_server: RedisServer) -> None:
    await bus.publish_agents([_info("triage", 1)])  # one worker runs triage...
    await bus.publish_agents([_info("demo", 0)])  # ...another demo, the default
    # an edge's view of the same Redis (its own cached copy)
    reader = Bus(connect(redis_server.url), prefix=bus.keys.prefix, shards=bus.shards)
    try:
        assert [a["name"] for a in await reader.agents()] == ["demo", "triage"]
        assert await reader.default_agent() == "demo"
        assert "until" not in (await reader.agents())[0]
        # demo's workers are gone: its entry outlives its last renewal by AGENT_TTL only
        raw = orjson.loads(await bus.redis.hget(bus.keys.agents(), "demo"))
        raw["until"] = time.time() - 1
        await bus.redis.hset(bus.keys.agents(), "demo", orjson.dumps(raw))
        assert [a["name"] for a in await reader.agents(fresh=True)] == ["demo", "triage"]
        reader._agents_read = (0.0, [])  # the copy is AGENTS_FRESH_S old
        assert [a["name"] for a in await reader.agents()] == ["triage"]
        await bus.publish_agents([_info("triage", 1)])  # a renewal deletes the stale entry
        assert await bus.redis.hkeys(bus.keys.agents()) == [b"triage"]
        assert 0 < await bus.redis.ttl(bus.keys.agents()) <= K.AGENT_TTL
    finally:
        await reader.close()


async def test_new_sessions_get_an_agent_and_keep_it(bus: Bus) -> None:
    assert (await bus.open_session("none", "ann")).agent == ""  # nothing registered yet
    await bus.publish_agents([_info("demo", 0), _info("triage", 1)])
    bus._agents_read = (0.0, [])
    assert (await bus.open_session("s1", "ann")).agent == "demo"
    assert (await bus.open_session("s2", "ann", agent="triage")).agent == "triage"
    assert (await bus.open_session("s2", "ann")).agent == "triage"
    assert (await bus.open_session("s2", "ann", agent="triage")).agent == "triage"
    with pytest.raises(AgentMismatch, match="this session talks to agent triage"):
        await bus.open_session("s2", "ann", agent="demo")
    with pytest.raises(UnknownAgent, match="no such agent: nope"):
        await bus.open_session("s3", "ann", agent="nope")
    assert await bus.session_owner("s3") is None  # not created
    got = await bus.open_sessions([("s2", "ann", "n", False, "demo"), ("s4", "ann", "n", True),
                                   ("s5", "ann", "n", True, "nope")])
    assert isinstance(got[0], AgentMismatch) and isinstance(got[2], UnknownAgent)
    assert not isinstance(got[1], BaseException) and got[1].agent == "demo"
    # the session created while none was registered takes the default when next opened
    assert (await bus.open_session("none", "ann")).agent == "demo"
    assert (await bus.session_meta("none"))["agent"] == "demo"


async def test_a_turn_goes_to_its_sessions_agents_shard(bus: Bus) -> None:
    await bus.publish_agents([_info("demo", 0), _info("triage", 1)])
    await bus.ensure_groups(("default", "demo", "triage"))
    await bus.open_session("t", "ann", agent="triage")
    await bus.submit("t", "c1", "hi", user="ann")
    shard = K.shard_for("t", bus.shards)
    assert await bus.shard_lag(shard, "triage") == 1
    assert await bus.shard_lag(shard, "demo") == 0 and await bus.shard_lag(shard) == 0
    assert await bus.claim([("demo", shard)], "w", 10, 10) == []  # (one shard per call: Cluster)
    [claim] = await bus.claim([("triage", shard)], "w", 10, 100)
    assert (claim.session, claim.agent) == ("t", "triage")
    # a session without an agent (from before the registry) takes the default at its turn
    await bus.redis.hdel(bus.keys.meta("t"), "agent")
    await bus.submit("t", "c2", "again", user="ann")
    assert (await bus.session_meta("t"))["agent"] == "demo"
    assert await bus.shard_lag(shard, "demo") == 1


async def test_submits_side_by_side_share_one_read_of_the_registry(bus: Bus) -> None:
    """Issue 13, session 20: an edge's copy of the registry went stale every
    ``AGENTS_FRESH_S`` and every SUBMIT that found it so, while the first one's read was on
    its way (the 40 sessions of a bench submitting together), sent an ``HGETALL`` of its
    own: now they wait for that one read."""
    await bus.publish_agents([_info("demo", 0)])
    bus._agents_read = (0.0, [])
    hgetall = bus.redis.hgetall
    reads: list[str] = []

    async def counted(key: str) -> dict[bytes, bytes]:
        reads.append(key)
        return await hgetall(key)

    bus.redis.hgetall = counted  # type: ignore[method-assign]
    try:
        got = await asyncio.gather(*(bus.default_agent() for _ in range(20)))
        assert (got, len(reads)) == (["demo"] * 20, 1)
        await bus.agents()  # the copy is fresh now: no read
        assert len(reads) == 1
        bus._agents_read = (0.0, [])
        await bus.agents(fresh=True)  # stale again: a read of its own, as before
        assert len(reads) == 2
    finally:
        bus.redis.hgetall = hgetall  # type: ignore[method-assign]
