"""A master of a real Redis Cluster is SIGKILLed while clients chat through edges and workers.

With ``AGENTIA_REDIS_WAIT_REPLICAS=1`` every turn a client was acked must complete: its
replica is promoted, edges and workers find the new master, clients resend what got a
retryable error and every acked turn gets its reply. (Without WAIT a failover may lose the
last writes of the dead master; docs/redis-cluster.md says what, and it is not asserted.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from launch.redis_server import RedisClusterServer
from sessions import keys as K
from sessions.bus import Bus, connect
from sessions.keys import key_slot
from tests.conftest import Client, Cluster

SESSIONS, TURNS = 8, 6
SAFE = {"AGENTIA_REDIS_WAIT_REPLICAS": "1", "AGENTIA_REDIS_WAIT_MS": "500",
        "AGENTIA_LEASE_MS": "4000"}


async def send_until_acked(c: Client, cid: str, text: str) -> int:
    """Send, and resend with the same id on a retryable error (as the client SDKs do)."""
    for _ in range(60):
        await c.send(type="send", id=cid, text=text)
        while True:
            try:
                f = await c.recv(20)
            except TimeoutError:
                raise AssertionError(f"{cid}: no answer in 20 s; {c.frames[-8:]}") from None
            if f["type"] == "ack" and f["id"] == cid:
                return int(f["offset"])
            if f["type"] == "error" and f.get("ref") == cid:
                assert f["retryable"], f
                await asyncio.sleep(f.get("retry_after_ms", 500) / 1000)
                break
    raise AssertionError(f"{cid} was never acked")


EARLY: list[int] = []
"""Turns whose reply came before their ack (printed: shows that path was taken)."""


async def reply_of(c: Client, turn: int, timeout: float) -> dict[str, Any]:
    """The turn's reply, on this connection. It may have come before the ack: a send refused
    with ``unavailable`` may have been stored anyway and run while the client was resending
    it, and the resend is acked (``duplicate``) after the reply (docs/protocol.md, error
    codes). ``send_until_acked`` read past it; it is in ``c.frames``."""
    early = [f for f in c.frames if f["type"] == "reply" and f.get("turn") == turn]
    if early:
        EARLY.append(turn)
        return early[0]
    return await c.until("reply", timeout=timeout, turn=turn)


async def chat(c: Client, sid: str, progress: dict[str, int], mid: asyncio.Event,
               url: str, prefix: str) -> list[int]:
    """TURNS turns, one after another; returns the offsets of the acked turns that got their
    reply (turn_error, or a turn that never ends, fails the test)."""
    done = []
    for t in range(TURNS):
        offset = await send_until_acked(c, f"m{t}", f"turn {t} of {sid}")
        try:
            reply = await reply_of(c, offset, 45)
        except TimeoutError:
            state = await session_state(url, prefix, sid)
            raise AssertionError(f"{sid}: acked turn {offset} got no reply in 45 s; "
                                 f"last frames {c.frames[-6:]}; Redis {state}") from None
        assert f"turn {t} of {sid}" in reply["text"]
        done.append(offset)
        progress[sid] = t + 1
        if len(progress) == SESSIONS:
            mid.set()
    return done


def slot_owner(server: RedisClusterServer, slot: int) -> int:
    """Port of the master that serves ``slot`` (CLUSTER SHARDS is 7.0+; NODES is enough)."""
    from launch.redis_server import _command

    for line in _command(server.alive_ports()[0], "CLUSTER", "NODES").splitlines():
        f = line.split()
        if "master" not in f[2] or "fail" in f[2]:
            continue
        for r in f[8:]:
            lo, _, hi = r.partition("-")
            if not lo.startswith("[") and int(lo) <= slot <= int(hi or lo):
                return int(f[1].split("@")[0].rsplit(":", 1)[1])
    raise AssertionError(f"slot {slot} has no master")


async def test_master_killed_mid_run_loses_no_acked_turn(own_cluster: RedisClusterServer,
                                                         prefix: str) -> None:
    procs = Cluster(own_cluster.url, prefix)
    try:
        edges = [procs.edge(**SAFE), procs.edge(**SAFE)]
        workers = [procs.worker("tests.agents_fixtures:slow", SLOW_DELAY="0.03", **SAFE)
                   for _ in range(2)]
        print("logs:", [p.log.name for p in procs.procs])
        sids = [f"fo-{i}" for i in range(SESSIONS)]
        clients = [await Client.open(edges[i % 2].port, session=sid) for i, sid in enumerate(sids)]
        for c in clients:
            assert (await c.recv())["type"] == "welcome"
        progress: dict[str, int] = {}
        mid = asyncio.Event()  # every client has had a reply
        runs = [asyncio.create_task(chat(c, sid, progress, mid, own_cluster.url, prefix))
                for c, sid in zip(clients, sids, strict=True)]
        await asyncio.wait_for(mid.wait(), 30)
        before = own_cluster.master_ports()
        victim = slot_owner(own_cluster, key_slot(sids[0]))
        own_cluster.kill(victim)
        t0 = time.monotonic()
        await asyncio.to_thread(own_cluster.wait_ok, 20, False)
        failover_s = time.monotonic() - t0
        after = own_cluster.master_ports()
        assert victim not in after and len(set(after) - set(before)) == 1, (before, after)
        unfinished = sum(done < TURNS for done in progress.values())
        assert unfinished >= SESSIONS // 2, "the kill must land mid-run"
        # WAIT 1 on a master left without a replica cannot be confirmed: its sessions get
        # retryable errors until the dead node is back (as a replica of the new master)
        own_cluster.restart(victim)
        await asyncio.to_thread(own_cluster.wait_ok, 30, True)
        assert victim not in own_cluster.master_ports()

        async with asyncio.timeout(90):
            results = await asyncio.gather(*runs)
        assert [len(r) for r in results] == [TURNS] * SESSIONS
        assert all(p.proc.poll() is None for p in [*edges, *workers]), "processes survive"
        await check_logs(own_cluster.url, prefix, sids)
        print(f"failover took {failover_s:.1f} s; {len(EARLY)} turns replied before their ack")
    finally:
        procs.stop()
    assert procs.edge_tracebacks() == []


async def session_state(url: str, prefix: str, sid: str) -> dict[str, Any]:
    """What Redis holds for a session whose turn never ended (to say why in the failure)."""
    bus = Bus(connect(url), prefix=prefix, shards=4)
    r, k = bus.redis, bus.keys
    inbound = k.inbound(K.shard_for(sid, 4))
    try:
        return {"lock": (await r.get(k.lock(sid)), await r.pttl(k.lock(sid))),
                "meta": await r.hgetall(k.meta(sid)),
                "turns": await r.xrange(k.turns(sid)),
                "pending": await r.xpending_range(inbound, K.GROUP, "-", "+", 50),
                "group": await r.xinfo_groups(inbound),
                "entries": [e for e in await r.xrange(inbound) if e[1][b"s"] == sid.encode()]}
    except Exception as exc:  # a diagnostic: never hide the failure it explains
        return {"error": repr(exc)}
    finally:
        await bus.close()


async def check_logs(url: str, prefix: str, sids: list[str]) -> None:
    """Every session's log, read from the new topology: contiguous offsets, every turn once
    with its reply."""
    bus = Bus(connect(url), prefix=prefix, shards=4)
    try:
        for sid in sids:
            r = await bus.replay(sid, 0, None, limit=2000)
            assert r.recovered and [o for o, _ in r.events] == list(range(1, r.offset + 1))
            events: list[dict[str, Any]] = [orjson.loads(e) for _, e in r.events]
            users = [e["id"] for e in events if e["type"] == "user"]
            assert users == [f"m{t}" for t in range(TURNS)], (sid, users)
            assert sum(e["type"] == "reply" for e in events) == TURNS
    finally:
        await bus.close()
