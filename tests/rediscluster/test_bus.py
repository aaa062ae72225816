"""The bus on a real Redis Cluster: slots, shard placement, every Bus operation, WAIT, and a
worker reading its shards one slot at a time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from agentia.codes import BusUnavailable
from launch.redis_server import RedisClusterServer, RedisServer
from loadtest.bench_failover_loss import lost_after_failover
from sessions.bus import Bus, connect
from sessions.keys import DEFAULT_AGENT, GROUP, key_slot, shard_for, shard_tag
from sessions.memory import RedisMemory
from sessions.runtime import ModelConfig, model_provider
from sessions.worker import Worker, WorkerConfig
from tests.agents_fixtures import fast


async def test_connect_gives_a_cluster_client(bus: Bus, redis_server: RedisClusterServer) -> None:
    assert redis_server.url.startswith("redis+cluster://127.0.0.1:")
    assert bus.cluster
    await bus.redis.initialize()
    assert len(bus.redis.get_primaries()) == 3
    assert sorted("slave" in n["flags"] for n in redis_server.nodes()) == [False] * 3 + [True] * 3


async def test_session_keys_share_one_slot_and_shards_use_every_master(bus: Bus) -> None:
    k = bus.keys
    sid = "user-42.chat:7"
    keys = [k.meta(sid), k.log(sid), k.turns(sid), k.client_ids(sid), k.nodes(sid),
            k.lock(sid), k.memory(sid)]
    slots = {await bus.redis.cluster_keyslot(key) for key in keys}
    assert slots == {key_slot(sid)}
    inbound = [k.inbound(s) for s in range(bus.shards)]
    for s, key in enumerate(inbound):  # the server agrees with our CRC16
        assert await bus.redis.cluster_keyslot(key) == key_slot(shard_tag(s, bus.shards))
    owners = {bus.redis.get_node_from_key(key).name for key in inbound}
    assert len(owners) == 3  # 4 shards over 3 masters: none left idle


async def test_every_bus_operation_works_on_the_cluster(bus: Bus) -> None:
    await bus.ensure_groups()
    assert await bus.heartbeat_node("n1") is False and await bus.heartbeat_node("n1")
    info = await bus.open_session("ops", "alice", "n1")
    assert info.offset == 0
    sub = await bus.submit("ops", "c1", "hello", user="alice")
    assert (sub.offset, sub.duplicate) == (1, False)
    assert (await bus.submit("ops", "c1", "hello", user="alice")).duplicate
    assert await bus.inbound_lag("ops") == 2  # the resend wrote a second entry
    off = await bus.append("ops", {"type": "delta", "turn": 1, "text": "hi"})
    assert off == 2
    replay = await bus.replay("ops", 0, info.epoch)
    assert replay.recovered and [o for o, _ in replay.events] == [1, 2]
    rows = await bus.read_delivery("n1", b"0", block_ms=100)
    assert [(d.session, d.offset) for d in rows] == [("ops", 1), ("ops", 2)]
    # a running turn's chunk: to the node's stream (another slot) and the partial buffer
    await bus.append("ops", {"type": "turn_start", "turn": 1, "attempt": 1}, run="1:1:x")
    await bus.stream_chunk("ops", "1:1:x", 1, b'{"type":"chunk"}', "hi")
    rows = await bus.read_delivery("n1", rows[-1].id, block_ms=100)
    assert [(d.offset, d.chunk and d.chunk.seq) for d in rows] == [(3, None), (0, 1)]
    assert (await bus.partial("ops")) is not None
    memory = RedisMemory(bus.redis, bus.keys, "ops", 1)
    await memory.add_items([{"role": "user", "content": "hello"}])
    assert await memory.get_items() == [{"role": "user", "content": "hello"}]
    await memory.save()  # REMEMBER (before a pause); a turn's ending writes them otherwise
    await bus.rollback_memory("ops", 1)
    assert await memory.get_items() == []
    # START taking the lock and reading the memory, the ending writing it: each one script on
    # the session's slot; the inbound entry is on another slot, so it is not acked with the
    # ending (ack apart: the worker's claim.ack())
    claim = (await bus.claim([shard_for("ops", bus.shards)], "w1", 10, 100))[0]
    started = await bus.start_attempt("ops", 1, "w1", max_attempts=3, lease_ms=30_000,
                                      read_memory=True)
    assert started.run and started.memory == []
    mem = bus.memory("ops", 1, "w1")
    await mem.add_items([{"role": "user", "content": "hello"}])
    ended = await bus.end_turn("ops", {"type": "reply", "turn": 1, "text": "hi"}, 1, "w1",
                               remember=mem.take_unsaved(), ack=claim.ack_command())
    assert ended.released and not ended.acked
    assert await bus.inbound_lag("ops") == 2  # read, not acked
    assert await bus.memory("ops", 2, "w1").get_items() == [{"role": "user", "content": "hello"}]
    await bus.touch_user_session("alice", "ops")
    await bus.drop_node("n1")
    assert await bus.read_delivery("n1", b"0", block_ms=10) == []


async def test_cancel_reaches_a_subscriber_on_another_node(bus: Bus) -> None:
    await bus.open_session("cx", "alice")
    await bus.submit("cx", "c1", "long", user="alice")
    # the subscription sits on whichever node the client picked, the publish goes through
    # the session's slot owner or any node: a cluster forwards it
    async with bus.cancel_feed() as feed:
        assert await bus.cancel("cx", None) == 1
        async with asyncio.timeout(5):
            async for data in feed:
                assert data == "cx 1"
                break


async def test_wait_confirms_writes_on_the_replica(redis_server: RedisClusterServer,
                                                   prefix: str) -> None:
    safe = Bus(connect(redis_server.url), prefix=prefix, shards=4, wait_replicas=1, wait_ms=2000)
    greedy = Bus(connect(redis_server.url), prefix=prefix, shards=4, wait_replicas=2, wait_ms=50)
    try:
        await safe.open_session("w", "alice")
        assert (await safe.submit("w", "a", "one", user="alice")).offset == 1
        assert await safe.append("w", {"type": "delta", "turn": 1, "text": "x"}) == 2
        # two replicas asked, one exists: written, not confirmed, so not acked
        t0 = time.monotonic()
        with pytest.raises(BusUnavailable):
            await greedy.submit("w", "b", "two", user="alice")
        assert time.monotonic() - t0 >= 0.05
        # the client's retry (same id) is acked once the confirmation is had
        again = await safe.submit("w", "b", "two", user="alice")
        assert (again.offset, again.duplicate) == (3, True)
        # the confirmed write is on the replica: read it there
        rows = await read_on_replica(redis_server, safe.keys.log("w"))
        assert [orjson.loads(f[b"e"])["type"] for _, f in rows] == ["user", "delta", "user"]
    finally:
        await safe.close()
        await greedy.close()


async def read_on_replica(server: RedisClusterServer, key: str) -> list[tuple[bytes, Any]]:
    """XRANGE on the replica that serves ``key``'s slot (the others answer MOVED)."""
    slot = key_slot(key[key.index("{") + 1:key.index("}")])
    for node in server.nodes():
        if "slave" not in node["flags"]:
            continue
        r: Any = aioredis.Redis(port=int(node["port"]))
        try:
            await r.execute_command("READONLY")
            if await r.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0:
                continue
            rows: list[tuple[bytes, Any]] = await r.xrange(key)
            return rows
        finally:
            await r.aclose()
    raise AssertionError(f"no replica holds slot {slot}")


async def test_worker_reads_each_shard_on_its_own(bus: Bus) -> None:
    sessions = [f"spread-{i}" for i in range(12)]
    assert {shard_for(s, bus.shards) for s in sessions} == set(range(bus.shards))
    for sid in sessions:
        await bus.open_session(sid, "alice")
        for t in range(2):
            await bus.submit(sid, f"m{t}", f"turn {t} of {sid}", user="alice")
    worker = Worker(bus, fast, model_provider(ModelConfig(api_key=None, base_url=None,
                                                          model="demo")),
                    WorkerConfig(concurrency=4, block_ms=200))
    async with asyncio.timeout(60):
        await worker.run(burst=True)
    assert worker.turns_done == 2 * len(sessions)
    for sid in sessions:
        kinds = [orjson.loads(e)["type"] for _, e in (await bus.replay(sid, 0, None)).events]
        assert kinds.count("reply") == 2, (sid, kinds)


async def test_wait_on_a_single_redis_with_a_replica(tmp_path: Path, prefix: str) -> None:
    """The knob is not Cluster-only: on one master with a replica (e.g. under Sentinel) the
    WAIT travels in the same pipeline as the write, and a missing replica refuses the ack."""
    master = RedisServer(tmp_path / "m").start()
    replica = RedisServer(tmp_path / "r").start()
    r: Any = aioredis.Redis(port=replica.port)
    m: Any = aioredis.Redis(port=master.port)
    try:
        await m.config_set("repl-diskless-sync-delay", 0)  # the first sync now, not in 5 s
        await r.replicaof("127.0.0.1", master.port)
        for _ in range(200):  # the first sync: up to 10 s
            if (await r.info("replication"))["master_link_status"] == "up":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the replica never synced")
        safe = Bus(connect(master.url), prefix=prefix, shards=4, wait_replicas=1, wait_ms=2000)
        greedy = Bus(connect(master.url), prefix=prefix, shards=4, wait_replicas=2, wait_ms=50)
        try:
            assert not safe.cluster
            await safe.open_session("w", "alice")
            assert (await safe.submit("w", "a", "one", user="alice")).offset == 1
            assert await safe.append("w", {"type": "delta", "turn": 1, "text": "x"}) == 2
            assert await r.xlen(safe.keys.log("w")) == 2  # on the replica already
            with pytest.raises(BusUnavailable):
                await greedy.append("w", {"type": "delta", "turn": 1, "text": "y"})
        finally:
            await safe.close()
            await greedy.close()
    finally:
        await r.aclose()
        await m.aclose()
        replica.stop()
        master.stop()


async def test_wait_after_a_failover_the_client_slept_through(own_cluster: RedisClusterServer,
                                                               prefix: str) -> None:
    """A client whose map of the cluster predates a failover (it sent nothing meanwhile, and
    the old master is back as a replica) must not WAIT on the wrong node: its first write
    gets a retryable error at worst, and the resend is confirmed on the new master."""
    bus = Bus(connect(own_cluster.url), prefix=prefix, shards=4, wait_replicas=1, wait_ms=2000)
    try:
        await bus.open_session("late", "alice")
        await bus.submit("late", "a", "before", user="alice")
        node = bus.redis.get_node_from_key(bus.keys.meta("late"))
        victim = node.port
        own_cluster.kill(victim)
        await asyncio.to_thread(own_cluster.wait_ok, 20, False)
        own_cluster.restart(victim)
        await asyncio.to_thread(own_cluster.wait_ok, 30, True)
        assert victim not in own_cluster.master_ports()
        await node.disconnect()  # idle connections closed meanwhile: the next one is new
        outcomes = []
        for _ in range(5):
            try:
                sub = await bus.submit("late", "b", "after", user="alice")
                outcomes.append(sub.offset)
                break
            except BusUnavailable:
                outcomes.append(0)
                await asyncio.sleep(0.2)
        assert outcomes[-1] == 2, outcomes
        rows = await read_on_replica(own_cluster, bus.keys.log("late"))
        assert [orjson.loads(f[b"e"])["id"] for _, f in rows] == ["a", "b"]
    finally:
        await bus.close()


async def test_wait_keeps_every_acked_turn_through_a_failover_with_a_lagging_replica(
        own_cluster: RedisClusterServer, prefix: str) -> None:
    """The knob's promise, where it matters: the replica lags (paused), the master dies, the
    replica is promoted. Without WAIT this loses hundreds to thousands of acked turns
    (loadtest/bench_failover_loss.py, docs/redis-cluster.md); with WAIT 1, none."""
    loss = await lost_after_failover(own_cluster, prefix, wait=1)
    assert loss.acked > 50 and loss.missing == 0, loss


async def test_shard_lags_and_the_reclaim_of_every_shard_go_one_slot_at_a_time(bus: Bus) -> None:
    """Session 17's one-pipeline reads on a single Redis are a call per shard on a Cluster
    (each shard its own slot): the lags of every shard, and a reclaim of all of them."""
    await bus.ensure_groups()
    shards = [("default", s) for s in range(bus.shards)]
    for s in range(bus.shards):
        await bus.redis.xadd(bus.keys.inbound(s), {"s": f"x{s}", "o": 1})
    assert await bus.shard_lags(shards) == {s: 1 for s in shards}
    assert len(await bus.claim([0], "dead", 10, 0)) == 1
    await asyncio.sleep(0.01)
    taken = await bus.reclaim_all(shards, "w2", 1, 10)
    assert [c.session for c in taken] == ["x0"] and taken[0].reclaimed


async def test_the_shard_upkeep_on_the_cluster(bus: Bus) -> None:
    """Issue 13, session 20: on a Cluster the upkeep reads and trims one shard at a time
    (each its own slot); pending entries stay, an agent with no shards yet is left alone."""
    await bus.ensure_groups()
    stream = bus.keys.inbound(0, DEFAULT_AGENT)
    ids = [await bus.redis.xadd(stream, {"s": f"u{i}", "o": 1}) for i in range(3)]
    claims = await bus.claim([0], "w1", 10, 0)
    await bus.ack_all([c for c in claims if c.id == ids[0]])
    await bus.maintain((DEFAULT_AGENT, "ghost"))
    pending = await bus.redis.xpending(stream, GROUP)
    assert pending["pending"] == 2 and pending["min"] == ids[1]
