"""Reconnects, dead workers, dead letters, cancel, duplicates and Redis restarts, for real."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson

from launch.redis_server import RedisServer
from sessions.bus import Bus, connect
from tests.conftest import Client, Cluster, streamed_text


def _events(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if "offset" in f and f["type"] not in ("ack", "welcome",
                                                                        "resumed")]


async def test_two_tabs_both_receive_the_reply(cluster: Cluster) -> None:
    edge = cluster.edge()
    cluster.worker()
    a = await Client.open(edge.port, session="tabs")
    b = await Client.open(edge.port, session="tabs")
    await a.recv()
    await b.recv()
    await a.send(type="send", id="x", text="hi from tab a")
    ra = await a.until("reply")
    rb = await b.until("reply")
    assert ra == rb
    user_b = [f for f in b.frames if f["type"] == "user"]
    assert user_b and user_b[0]["text"] == "hi from tab a"


async def test_reconnect_mid_reply_to_another_edge_resumes_without_gap(cluster: Cluster) -> None:
    e1, e2 = cluster.edge(), cluster.edge()
    cluster.worker("tests.agents_fixtures:slow", SLOW_DELAY="0.1")
    c = await Client.open(e1.port, session="hop")
    welcome = await c.recv()
    await c.send(type="send", id="q", text="tell me something rather long please")
    await c.until("chunk")
    await c.until("chunk")
    e1.kill()  # the edge dies mid-reply
    seen = _events(c.frames)
    last = seen[-1]["offset"]
    c2 = await Client.open(e2.port, session="hop")
    await c2.recv()
    await c2.send(type="resume", after=last, epoch=welcome["epoch"])
    resumed = await c2.until("resumed")
    assert resumed["recovered"] is True
    if not any(f["type"] == "reply" for f in c2.frames):
        await c2.until("reply")
    got = seen + _events(c2.frames)
    offsets = [f["offset"] for f in got]
    assert offsets == list(range(1, offsets[-1] + 1)), offsets
    # the text as a client applies it (docs/protocol.md chunk/partial): the first edge's
    # chunks, then the second's partial and chunks; exactly the reply, nothing twice
    streamed = c.frames + [f for f in c2.frames if f["type"] in ("chunk", "partial")]
    assert streamed_text(streamed, got[-1]["turn"]) == got[-1]["text"]
    assert any(f["type"] == "partial" for f in c2.frames), [f["type"] for f in c2.frames]


async def test_resume_past_trimmed_log_is_not_recovered(bus: Bus, cluster: Cluster) -> None:
    edge = cluster.edge()
    await bus.open_session("trim", "alice")
    for n in range(30):
        await bus.append("trim", {"type": "delta", "turn": 1, "text": str(n)})
    await bus.redis.xtrim(bus.keys.log("trim"), maxlen=10, approximate=False)
    meta = await bus.session_meta("trim")
    c = await Client.open(edge.port, session="trim")
    await c.recv()
    await c.send(type="resume", after=5, epoch=meta["epoch"])
    resumed = await c.until("resumed")
    assert resumed["recovered"] is False and resumed["offset"] == 30
    assert [f["offset"] for f in _events(c.frames)] == list(range(21, 31))
    # an old epoch (Redis lost the session) is not recovered either
    c2 = await Client.open(edge.port, session="trim")
    await c2.recv()
    await c2.send(type="resume", after=29, epoch="not-the-epoch")
    assert (await c2.until("resumed"))["recovered"] is False


async def test_duplicate_send_id_gives_one_turn(bus: Bus, cluster: Cluster) -> None:
    edge = cluster.edge()
    cluster.worker()
    c = await Client.open(edge.port, session="dup")
    await c.recv()
    await c.send(type="send", id="same", text="once only")
    await c.send(type="send", id="same", text="once only")
    first, second = await c.until("ack"), await c.until("ack")
    assert first["offset"] == second["offset"] and second["duplicate"] is True
    await c.send(type="send", id="next", text="second message")
    nxt = await c.until("ack", id="next")
    await c.until("reply", turn=nxt["offset"])
    r = await bus.replay("dup", 0, None)
    kinds = [orjson.loads(e)["type"] for _, e in r.events]
    assert kinds.count("user") == 2 and kinds.count("reply") == 2, kinds


async def test_killed_worker_turn_is_finished_by_another(cluster: Cluster) -> None:
    edge = cluster.edge()
    w1 = cluster.worker("tests.agents_fixtures:slow", SLOW_DELAY="0.2", AGENTIA_LEASE_MS="1500")
    c = await Client.open(edge.port, session="orphan")
    await c.recv()
    await c.send(type="send", id="q", text="a turn that outlives its worker")
    await c.until("chunk")
    w1.kill()
    cluster.worker("tests.agents_fixtures:slow", SLOW_DELAY="0.01", AGENTIA_LEASE_MS="1500")
    restart = await c.until("turn_start", timeout=20, attempt=2)
    reply = await c.until("reply", timeout=20)
    assert reply["turn"] == restart["turn"] == 1
    assert "outlives its worker" in reply["text"]


async def test_always_failing_turn_is_dead_lettered(bus: Bus, cluster: Cluster) -> None:
    edge = cluster.edge()
    cluster.worker("tests.agents_fixtures:failing", AGENTIA_MAX_ATTEMPTS="2")
    c = await Client.open(edge.port, session="poison")
    await c.recv()
    await c.send(type="send", id="p", text="this will fail")
    err = await c.until("turn_error", timeout=20)
    assert err["code"] == "turn_failed" and err["turn"] == 1 and err["retryable"] is False
    starts = [f for f in c.frames if f["type"] == "turn_start"]
    assert [s["attempt"] for s in starts] == [1, 2]
    from sessions.keys import shard_for

    dlq = await bus.redis.xrange(bus.keys.dead_letters(shard_for("poison", 4)))
    assert len(dlq) == 1 and dlq[0][1][b"s"] == b"poison"
    # the session goes on: the next turn is taken (and fails the same way, independently)
    await c.send(type="send", id="p2", text="again")
    assert (await c.until("turn_error", timeout=20))["turn"] > 1


async def test_cancel_stops_a_running_turn(cluster: Cluster) -> None:
    edge = cluster.edge()
    cluster.worker("tests.agents_fixtures:slow", SLOW_DELAY="0.3")
    c = await Client.open(edge.port, session="cancel")
    await c.recv()
    await c.send(type="send", id="q", text="a long answer that we will stop early on purpose")
    ack = await c.until("ack")
    await c.until("chunk")
    t0 = time.monotonic()
    await c.send(type="cancel", turn=ack["offset"])
    assert (await c.until("cancelling"))["turn"] == ack["offset"]
    done = await c.until("cancelled")
    elapsed = time.monotonic() - t0
    assert done["turn"] == ack["offset"]
    assert elapsed < 1.0, elapsed  # far below the 0.3 s x ~15 words left in the reply
    assert not any(f["type"] == "reply" for f in c.frames)
    await c.send(type="cancel", turn=ack["offset"])
    err = await c.until("error")
    assert err["code"] == "turn_not_active" and err["retryable"] is False


async def test_redis_restart_keeps_sockets_and_acked_turns(tmp_path: Path, prefix: str) -> None:
    redis = RedisServer(tmp_path / "r").start()
    cluster = Cluster(redis.url, prefix)
    try:
        edge = cluster.edge()
        cluster.worker()
        c = await Client.open(edge.port, session="rr")
        await c.recv()
        await c.send(type="send", id="1", text="before the restart")
        await c.until("reply")
        redis.stop()
        await c.send(type="send", id="2", text="while redis is down")
        err = await c.until("error")
        assert err["code"] == "unavailable" and err["retryable"] is True
        redis.start()
        for _ in range(20):  # a client retries a retryable error with the same id
            await c.send(type="send", id="2", text="while redis is down")
            ack = await c.recv()
            if ack["type"] == "ack":
                break
            assert ack["code"] == "unavailable"
            await asyncio.sleep(0.25)
        reply = await c.until("reply", timeout=20, turn=ack["offset"])
        assert "while redis is down" in reply["text"]
        check = Bus(connect(redis.url), prefix=prefix)
        r = await check.replay("rr", 0, None)
        assert [o for o, _ in r.events] == list(range(1, r.offset + 1))
        await check.close()
    finally:
        cluster.stop()
        redis.stop()
    assert cluster.edge_tracebacks() == []


async def test_writers_stop_delivering_to_a_dead_edge(bus: Bus, cluster: Cluster) -> None:
    """An edge killed without draining stays in its sessions' node lists; once its heartbeat
    key expires, workers stop writing its delivery stream and drop it from the session."""
    a, b = cluster.edge(), cluster.edge(AGENTIA_NODE_TTL="4")  # b's key: 4 s, not 15
    cluster.worker()
    on_b = await Client.open(b.port, session="ghost")
    dead = (await on_b.recv())["node"]
    b.kill()
    on_a = await Client.open(a.port, session="ghost")
    await on_a.recv()
    nodes_key, stream = bus.keys.nodes("ghost"), bus.keys.delivery(dead)
    assert await bus.redis.hexists(nodes_key, dead)
    for _ in range(30):  # AGENTIA_NODE_TTL (4 s) after its last heartbeat
        if not await bus.redis.exists(bus.keys.node_alive(dead)):
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError("the killed edge's heartbeat key did not expire")
    before = await bus.redis.xlen(stream)
    await on_a.send(type="send", id="1", text="anyone there?")
    await on_a.until("reply")
    assert await bus.redis.xlen(stream) == before
    assert not await bus.redis.hexists(nodes_key, dead)
    await on_a.close()
