"""sessions/opening.py and the session TTLs against a real Redis (unique prefix per test)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentia.codes import BusUnavailable, CloseCode
from launch.redis_server import RedisServer, free_port
from sessions import keys as K
from sessions.bus import Bus, Missing, connect
from sessions.opening import Batcher, Limits, Refused, UserLimits


@pytest.fixture
async def users(bus: Bus) -> AsyncIterator[UserLimits]:
    yield UserLimits(bus.redis, bus.keys.prefix, Limits(3, 4, 5, 120))


async def test_connections_are_capped_per_user_over_all_edges(users: UserLimits) -> None:
    got = await users.lease([("ann", f"edge{i % 2}:{i}") for i in range(5)])
    assert got == [True, True, True, False, False]
    assert await users.lease([("ben", "edge0:9")]) == [True]  # another user is not affected
    assert await users.lease([("ann", "edge0:0")]) == [True]  # a lease held is renewed
    await users.release([("ann", "edge1:1")])
    assert await users.lease([("ann", "edge1:7")]) == [True]  # a released slot is free again
    assert await users.lease([("ann", "edge1:8")]) == [False]


async def test_leases_of_a_dead_edge_expire(users: UserLimits) -> None:
    assert await users.lease([("ann", f"dead:{i}") for i in range(3)]) == [True] * 3
    key = users.keys.conns("ann")
    # the dead edge stopped renewing: its leases end (as if CONN_LEASE_S had passed)
    await users.redis.zadd(key, {f"dead:{i}": int(time.time() * 1000) - 1 for i in range(3)})
    assert await users.lease([("ann", "live:0")]) == [True]
    assert await users.redis.zcard(key) == 1  # the expired ones are pruned


async def test_renew_extends_and_restores_leases(users: UserLimits) -> None:
    await users.lease([("ann", "e:1")])
    key = users.keys.conns("ann")
    before = await users.redis.zscore(key, "e:1")
    await users.redis.delete(key)  # Redis lost it (restart, outage longer than the lease)
    await users.renew({"ann": ["e:1", "e:2"]})
    after = await users.redis.zscore(key, "e:1")
    assert after is not None and after >= before
    assert 0 < await users.redis.ttl(key) <= K.CONN_LEASE_S


async def test_new_sessions_per_hour_then_live_sessions(users: UserLimits) -> None:
    got = await users.reserve([("ann", f"s{i}") for i in range(5)])
    assert got[:4] == [None] * 4
    assert isinstance(got[4], Refused) and got[4].code is CloseCode.NEW_SESSIONS_RATE
    assert await users.reserve([("ann", "s1")]) == [None]  # counted once
    # an hour later the rate allows more, but 5 live sessions is the cap
    old = time.time() - K.NEW_SESSIONS_WINDOW_S - 1
    await users.redis.zadd(users.keys.new("ann"), {f"s{i}": old for i in range(4)})
    got = await users.reserve([("ann", "s5"), ("ann", "s6")])
    assert got[0] is None
    assert isinstance(got[1], Refused) and got[1].code is CloseCode.TOO_MANY_SESSIONS
    # a session that expired no longer counts
    await users.redis.zadd(users.keys.live("ann"), {"s0": int(time.time()) - 1})
    assert await users.reserve([("ann", "s6")]) == [None]


async def test_zero_turns_a_limit_off(bus: Bus) -> None:
    off = UserLimits(bus.redis, bus.keys.prefix, Limits(0, 0, 0))
    assert await off.lease([("ann", f"e:{i}") for i in range(300)]) == [True] * 300
    assert await off.reserve([("ann", f"s{i}") for i in range(300)]) == [None] * 300


async def test_a_session_gets_the_short_ttl_until_its_first_turn(bus: Bus) -> None:
    for node in ("n1", "n2"):  # alive, so that delivery keeps them in the session's nodes
        await bus.heartbeat_node(node)
    with pytest.raises(Missing):
        await bus.open_session("s1", "ann", "n1", create=False)
    assert not await bus.redis.exists(bus.keys.meta("s1"))
    users = UserLimits(bus.redis, bus.keys.prefix, Limits(new_session_ttl=bus.new_session_ttl))
    assert await users.reserve([("ann", "s1")]) == [None]
    info = await bus.open_session("s1", "ann", "n1")
    assert info.offset == 0
    for key in (bus.keys.meta("s1"), bus.keys.nodes("s1")):
        assert 0 < await bus.redis.ttl(key) <= bus.new_session_ttl
    await bus.open_session("s1", "ann", "n2")  # reopened unused: still short
    assert await bus.redis.ttl(bus.keys.meta("s1")) <= bus.new_session_ttl
    live = users.keys.live("ann")
    assert await bus.redis.zscore(live, "s1") <= time.time() + bus.new_session_ttl
    await bus.submit("s1", "c1", "hello", user="ann")
    for key in (bus.keys.meta("s1"), bus.keys.nodes("s1"), bus.keys.log("s1")):
        assert await bus.redis.ttl(key) > K.SESSION_TTL - 60
    assert await bus.redis.zscore(live, "s1") > time.time() + K.SESSION_TTL - 60
    await bus.open_session("s1", "ann", "n1")  # used: reopening keeps the long ttl
    assert await bus.redis.ttl(bus.keys.meta("s1")) > K.SESSION_TTL - 60


async def test_open_sessions_batch_reports_missing_per_session(bus: Bus) -> None:
    await bus.open_session("old", "ann")
    got = await bus.open_sessions([("old", "ann", "n", False), ("new", "ann", "n", False),
                                   ("new2", "ann", "n", True)])
    assert got[0].offset == 0  # type: ignore[union-attr]
    assert isinstance(got[1], Missing)
    assert got[2].offset == 0  # type: ignore[union-attr]


async def test_out_of_memory_is_unavailable(tmp_path: Path, prefix: str) -> None:
    server = RedisServer(tmp_path / "oom", appendonly=False).start()
    bus = Bus(connect(server.url), prefix=prefix, shards=2)
    users = UserLimits(bus.redis, prefix, Limits())
    try:
        await bus.open_session("s1", "ann", "n1")
        await bus.redis.config_set("maxmemory", 1)  # full: noeviction refuses every write
        with pytest.raises(BusUnavailable, match="out of memory"):
            await bus.submit("s1", "c1", "hello", user="ann")
        with pytest.raises(BusUnavailable):
            await bus.open_session("s2", "ann", "n1")
        assert not await bus.redis.exists(bus.keys.meta("s2"))  # refused whole
        for got in (await users.lease([("ann", "n1:1")]), await users.reserve([("ann", "s2")])):
            assert isinstance(got[0], BusUnavailable)
        assert (await bus.open_session("s1", "ann", "n2")).offset == 0  # reads still work
        await bus.redis.config_set("maxmemory", 0)
        assert (await bus.submit("s1", "c1", "hello", user="ann")).offset == 1
    finally:
        await bus.close()
        server.stop()


async def test_batcher_groups_concurrent_calls_and_fails_each_alone() -> None:
    batches: list[list[int]] = []

    async def run(items: list[int]) -> list[int | BaseException]:
        batches.append(items)
        await asyncio.sleep(0.01)
        return [ValueError(i) if i < 0 else i * 2 for i in items]

    b: Batcher[int, int] = Batcher(run, size=3)
    got = await asyncio.gather(*(b(i) for i in (1, 2, -3, 4, 5)), return_exceptions=True)
    assert got[:2] == [2, 4] and isinstance(got[2], ValueError) and got[3:] == [8, 10]
    assert batches == [[1, 2, -3], [4, 5]]


async def test_redis_down_is_unavailable(prefix: str) -> None:
    users = UserLimits(connect(f"redis://127.0.0.1:{free_port()}/0"), prefix, Limits())
    got = await users.lease([("ann", "e:1"), ("ann", "e:2")])
    assert all(isinstance(g, BusUnavailable) for g in got)
    with pytest.raises(BusUnavailable):
        await users.release([("ann", "e:1")])


async def test_an_edge_node_leases_renews_and_releases(bus: Bus, prefix: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """gateway/node.py's open path without sockets: admit, open, renew, forget."""
    from agentia.settings import from_env
    from agentia.settings_edge import EdgeSettings
    from gateway.auth import mint
    from gateway.node import EdgeNode
    from tests.conftest import TEST_SECRET

    monkeypatch.setenv("AGENTIA_JWT_SECRET", TEST_SECRET)
    monkeypatch.setenv("AGENTIA_MAX_CONNECTIONS_PER_USER_TOTAL", "2")
    monkeypatch.setenv("AGENTIA_MAX_SESSIONS_PER_HOUR", "2")
    node = EdgeNode(from_env(EdgeSettings), bus, "n1")
    auth = {"authorization": f"Bearer {mint(TEST_SECRET, 'ann', 600)}"}
    conns = [node.admit(auth, "", s) for s in ("a", "a", None)]
    assert all(not isinstance(c, tuple) for c in conns)
    got = [await node.open(c) for c in conns]  # type: ignore[arg-type]
    assert got[:2] == [None, None] and got[2] is not None and got[2][0] == 4005
    key = node.users.keys.conns("ann")
    assert await bus.redis.zcard(key) == 2 and node.count == 2
    await bus.redis.zadd(key, {m: 1 for m in await bus.redis.zrange(key, 0, -1)})
    await node.renew_leases()
    assert min(s for _, s in await bus.redis.zrange(key, 0, -1, withscores=True)) > (
        time.time() * 1000)
    await node.forget(conns[0])  # type: ignore[arg-type]
    assert await bus.redis.zcard(key) == 1
    await node.forget(conns[1])  # type: ignore[arg-type]
    assert await bus.redis.zcard(key) == 0 and node.count == 0
    fresh = [node.admit(auth, "", None) for _ in range(2)]  # generated ids: new sessions
    got = [await node.open(c) for c in fresh]  # type: ignore[arg-type]
    assert got[0] is None and got[1] is not None and got[1][0] == 4502  # "a" was the 1st
    assert await bus.redis.zcard(key) == 1  # the refused one gave its lease back
    assert node.metrics["refused_user_total"] == 1 and node.metrics["refused_new_sessions"] == 1
