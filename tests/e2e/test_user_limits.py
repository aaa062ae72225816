"""Deployment-wide per-user limits against real edges and Redis, on both transports: the
documented close codes (docs/protocol.md, sections 2 and 8), never a traceback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from agentia_client import AgentiaClient, Backoff, ServerClosed
from launch.redis_server import RedisServer
from sessions import keys as K
from sessions.bus import Bus, connect
from tests.conftest import TRANSPORTS, Client, Cluster, token


async def refused(port: int, user: str, session: str | None = None) -> tuple[int, str]:
    """Open a connection that the edge upgrades and then closes instead of ``welcome``."""
    c = await Client.open(port, user=user, session=session)
    with pytest.raises(ConnectionClosed) as info:
        frame = await c.recv()
        raise AssertionError(f"expected a close, got {frame}")
    rcvd = info.value.rcvd
    assert rcvd is not None
    return rcvd.code, rcvd.reason


async def welcomed(port: int, user: str, session: str | None = None) -> Client:
    c = await Client.open(port, user=user, session=session)
    assert (await c.recv())["type"] == "welcome"
    return c


async def test_connections_per_user_are_capped_over_two_edges(cluster: Cluster) -> None:
    a, b = (cluster.edge(AGENTIA_MAX_CONNECTIONS_PER_USER_TOTAL="3") for _ in range(2))
    held = [await welcomed(a.port, "ann", "s1"), await welcomed(b.port, "ann", "s1"),
            await welcomed(a.port, "ann", "s2")]  # each edge alone is under its cap of 100
    for edge in (a, b):
        code, reason = await refused(edge.port, "ann", "s1")
        assert code == 4005 and "too many connections" in reason
    other = await welcomed(b.port, "ben")  # another user is not affected
    await held[0].close()
    await asyncio.sleep(0.3)  # the edge gives the lease back after the close
    held[0] = await welcomed(b.port, "ann", "s1")
    assert (await refused(a.port, "ann"))[0] == 4005
    for c in (*held, other):
        await c.close()


async def test_new_sessions_per_hour_are_refused_with_4502(cluster: Cluster) -> None:
    edge = cluster.edge(AGENTIA_MAX_SESSIONS_PER_HOUR="3")
    for i in range(3):
        await (await welcomed(edge.port, "ann", f"n{i}")).close()
    code, reason = await refused(edge.port, "ann", "n3")
    assert code == 4502 and "new sessions" in reason
    assert (await refused(edge.port, "ann"))[0] == 4502  # a generated id is new too
    await (await welcomed(edge.port, "ann", "n1")).close()  # existing sessions still open
    await (await welcomed(edge.port, "ben", "b0")).close()
    # the Python SDK stops on it (no reconnect loop) and says why
    client = AgentiaClient(f"ws://127.0.0.1:{edge.port}/v1/ws", token("ann"), session="n4")
    with pytest.raises(ServerClosed) as info:
        await client.connect()
    assert info.value.code == 4502 and client.stats["connect_attempts"] == 1
    await client.close()


async def test_live_sessions_per_user_are_capped_with_4503(cluster: Cluster) -> None:
    edge = cluster.edge(AGENTIA_MAX_SESSIONS_PER_USER="2")
    for i in range(2):
        await (await welcomed(edge.port, "ann", f"l{i}")).close()
    code, reason = await refused(edge.port, "ann", "l2")
    assert code == 4503 and "live sessions" in reason
    await (await welcomed(edge.port, "ann", "l0")).close()


async def test_a_session_without_a_turn_gets_the_short_ttl(cluster: Cluster, bus: Bus) -> None:
    edge = cluster.edge(AGENTIA_NEW_SESSION_TTL_S="120")
    unused = await welcomed(edge.port, "ann", "unused")
    used = await welcomed(edge.port, "ann", "used")
    await used.send(type="send", id="m1", text="hello")
    assert (await used.until("ack"))["offset"] == 1
    assert 0 < await bus.redis.ttl(bus.keys.meta("unused")) <= 120
    assert 0 < await bus.redis.ttl(bus.keys.nodes("unused")) <= 120
    for key in (bus.keys.meta("used"), bus.keys.nodes("used"), bus.keys.log("used")):
        assert await bus.redis.ttl(key) > K.SESSION_TTL - 60
    live = K.UserKeys(bus.keys.prefix).live("ann")
    assert await bus.redis.zscore(live, "unused") <= time.time() + 121
    assert await bus.redis.zscore(live, "used") > time.time() + K.SESSION_TTL - 60
    await unused.close()
    await used.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_redis_out_of_memory_is_unavailable(transport: str, tmp_path: Path,
                                                 prefix: str) -> None:
    redis = RedisServer(tmp_path / "redis", appendonly=False, maxmemory=64 << 20).start()
    cluster = Cluster(redis.url, prefix, transport)
    bus = Bus(connect(redis.url), prefix=prefix, shards=4)
    try:
        edge = cluster.edge()
        c = await welcomed(edge.port, "ann", "full")
        assert await bus.redis.config_get("maxmemory-policy") == {
            "maxmemory-policy": "noeviction"}
        await bus.redis.config_set("maxmemory", 1)  # full: every memory-growing write fails
        await c.send(type="send", id="m1", text="hello")
        err = await c.until("error")
        assert err["code"] == "unavailable" and err["retryable"] is True and err["ref"] == "m1"
        code, reason = await refused(edge.port, "ann", "another")
        assert code == 1013 and "retry" in reason
        await bus.redis.config_set("maxmemory", 64 << 20)
        await c.send(type="send", id="m1", text="hello")  # the client's retry goes through
        assert (await c.until("ack", id="m1"))["offset"] == 1
        await c.close()
    finally:
        await bus.close()
        cluster.stop()
        redis.stop()
    assert cluster.edge_tracebacks() == []


async def test_connections_of_a_killed_edge_stop_counting_when_their_leases_end(
        cluster: Cluster, bus: Bus) -> None:
    a, b = (cluster.edge(AGENTIA_MAX_CONNECTIONS_PER_USER_TOTAL="2") for _ in range(2))
    held = [await welcomed(a.port, "ann", "k1"), await welcomed(a.port, "ann", "k2")]
    a.kill()  # SIGKILL: no drain, the leases stay in Redis
    assert (await refused(b.port, "ann", "k1"))[0] == 4005
    key = K.UserKeys(bus.keys.prefix).conns("ann")
    leases = await bus.redis.zrange(key, 0, -1, withscores=True)
    now_ms = time.time() * 1000
    assert len(leases) == 2 and all(
        now_ms < end <= now_ms + K.CONN_LEASE_S * 1000 for _, end in leases)
    # CONN_LEASE_S later (nobody renewed them): the user's slots are free again
    await bus.redis.zadd(key, {m: now_ms - 1 for m, _ in leases})
    c = await welcomed(b.port, "ann", "k1")
    for x in (*held, c):
        await x.ws.close()


async def test_the_python_sdk_retries_4005_until_a_slot_frees(cluster: Cluster) -> None:
    edge = cluster.edge(AGENTIA_MAX_CONNECTIONS_PER_USER_TOTAL="1")
    held = await welcomed(edge.port, "ann", "r1")
    client = AgentiaClient(f"ws://127.0.0.1:{edge.port}/v1/ws", token("ann"), session="r1",
                           backoff=Backoff(base=0.1, cap=0.2))
    connecting = asyncio.create_task(client.connect())
    await asyncio.sleep(1.0)
    assert not connecting.done() and client.stats["connect_attempts"] >= 2
    await held.close()  # a slot frees: the next attempt gets in
    await asyncio.wait_for(connecting, 10)
    assert client.connected and client.error is None
    await client.close()
