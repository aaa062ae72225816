"""What a turn costs Redis on the worker side (issue 13's budget, kept by issue 14's events),
counted with INFO commandstats (a script's inner calls included) on a real Redis: the commands of
eleven turns less those of one, over ten, so the worker's start and polling cancel out."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from launch.redis_server import RedisServer
from sessions import coalescer
from sessions import events as E
from sessions import keys as K
from sessions.bus import Bus, connect
from sessions.coalescer import ChunkFlusher, Coalescer
from sessions.keys import DEFAULT_AGENT, PARTIAL_EVERY, shard_for
from sessions.roles import Partial
from sessions.runtime import ModelConfig, model_provider
from sessions.worker import Worker, WorkerConfig
from tests.agents_fixtures import fast

BUDGET = {"hello there": 42, "what is 6 * 7": 58}
"""Commands per turn with no node delivering the session, the worker's polling left out
(``NOT_PER_TURN``): 39.1 and 54.1 since session 17 (38.1 and 53.1 before in the same hour: the
memory's version, one LLEN in START and one HINCRBY in the ending, and no LRANGE when the
worker's copy is current, sessions/memory_cache.py); 39.7 and 54.7 since session 15 (one HINCRBY
per script for its events, the memory items in one RPUSH, the ending's HSETs merged, no rollback
on a first attempt; 44.7 and 62.7 at 4f7a984 in the same run); 44.5 and 62.3 since START and a
running attempt's appends other than its ending leave the log's and meta's ttl as SUBMIT renewed
them and the scripts read meta with one ``HMGET`` (issue 13, session 13: four ``EXPIRE``s and
seven reads fewer a turn); 53.9 and 78.1 since the lock is taken by START and the memory written
by the ending (issue 13, turn-scripts); were 60.6 and 88.9, the same in every run (with the
polling: 60 and 88-89 when issue 14 set 64 and 93, 62.5-64.6 and 91.4-95.6 on a loaded machine);
docs/architecture.md "One turn". The exact counts of what issue 13's turn-redis work cut (the
partial buffer, the ending that frees the lock) are the two tests at the end."""

NOT_PER_TURN = frozenset({"info", "xreadgroup", "xautoclaim", "hello", "ping", "script|load",
                          "client|setinfo", "client|setname"})
"""Left out of the budget: the worker's polling (as many as its reads wait, which a loaded
machine stretches: the budget moved by ±3 with them) and new connections' handshakes."""


async def commands(r: aioredis.Redis, only: str = "") -> int:
    """Commands run so far (``only``: of that one, e.g. ``xadd``), less ``NOT_PER_TURN``."""
    stats = await r.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items()
               if k.removeprefix("cmdstat_") not in NOT_PER_TURN
               and (not only or k == f"cmdstat_{only}"))


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


async def test_the_partial_buffer_takes_every_tenth_piece(bus: Bus) -> None:
    """Issue 13: the partial buffer is written with every PARTIAL_EVERY-th piece (the text of
    the pieces since the last), not with each: 25 pieces cost 2 RPUSHX, and what a resume
    reads is the text of the first 20, with their seq."""
    await bus.open_session("s", "ann")
    turn = (await bus.submit("s", "m1", "hi", user="ann")).offset
    run = f"{turn}:1:ab12"
    await bus.append("s", E.turn_start(turn, 1), run=run)
    flusher = ChunkFlusher(bus, interval=3600)  # flushed by hand: one piece each
    co = Coalescer(flusher, "s", turn, 1, run)
    before = await commands(bus.redis, "rpushx")
    try:
        for n in range(25):
            co.add(f"p{n} ")
            await co.flush()
    finally:
        if flusher._ticker is not None:
            flusher._ticker.cancel()
    assert await commands(bus.redis, "rpushx") - before == 25 // PARTIAL_EVERY == 2
    held = 2 * PARTIAL_EVERY
    assert await bus.partial("s") == Partial(turn, 1, run.encode(), held,
                                             "".join(f"p{n} " for n in range(held)))


async def test_a_turns_ending_frees_the_lock(redis_server: RedisServer) -> None:
    """Issue 13: a turn with none pending after it ends in one script that also frees the
    session lock (sessions/scripts.py APPEND ``release``): per turn run alone, one XRANGE of
    the pending turns (the turn itself) and no RELEASE script after the ending (was: a second
    XRANGE finding none, then RELEASE). Scripts per turn (issue 13's turn-scripts work: 7 ->
    4): the edge's SUBMIT, START (which takes the lock: no ACQUIRE), the ``speaking`` APPEND
    and the ending APPEND, which also writes the turn's memory items (no REMEMBER: the SDK's
    two saves, the input and then the output, wait in RedisMemory). The memory holds each
    item once, tagged with its turn. The first turn also counts the worker's start."""
    bus = Bus(connect(redis_server.url), prefix=f"t{uuid.uuid4().hex[:10]}", shards=4)
    try:
        await bus.ensure_groups()
        worker = Worker(bus, fast, model_provider(ModelConfig(demo_word_delay=0)),
                        WorkerConfig(block_ms=20, coalesce_ms=1000))
        await bus.open_session("s", "alice")
        counts = []
        for i in range(3):
            before = {c: await commands(bus.redis, c) for c in ("evalsha", "xrange")}
            await bus.submit("s", f"m{i}", "hello there", user="alice")
            await worker.run(burst=True)
            counts.append({c: await commands(bus.redis, c) - n for c, n in before.items()})
            assert not await bus.redis.exists(bus.keys.lock("s"))
        assert counts[1:] == [{"evalsha": 4, "xrange": 1}] * 2, counts
        stored = await bus.redis.lrange(bus.keys.memory("s"), 0, -1)
        tags = [int(r.partition(b"|")[0]) for r in stored]
        users = [orjson.loads(r.partition(b"|")[2]).get("content") for r in stored
                 if orjson.loads(r.partition(b"|")[2]).get("role") == "user"]
        offsets = [e for e, _ in (await bus.replay("s", 0, None)).events]
        assert users == ["hello there"] * 3 and len(set(tags)) == 3, stored
        assert len(stored) == 6 and all(t in offsets for t in tags), stored  # user + reply
    finally:
        await bus.close()


async def test_a_submit_is_its_script_alone(bus: Bus) -> None:
    """Issue 13 (turn-scripts, then session 11): the user event's fan-out, the turn's queue
    entry and the user's live-session score go in the SUBMIT script itself once the session's
    node is known alive (were three round trips after it, then one pipeline), on a single
    Redis without WAIT; each is still done."""
    await bus.heartbeat_node("n1")
    await bus.open_session("s", "alice", "n1")
    await bus.submit("s", "m0", "hi", user="alice")  # the node's liveness is checked once
    await bus.redis.zadd(bus.user_keys.live("alice"), {"s": 1})
    sub, calls, pipelines = await _submit_counted(bus)
    assert (calls, pipelines) == (["EVALSHA"], 0)
    inbound = bus.keys.inbound(shard_for("s", bus.shards), DEFAULT_AGENT)
    assert [int(f[b"o"]) for _, f in await bus.redis.xrange(inbound)][-1] == sub.offset
    rows = await bus.read_delivery("n1", b"0-0", 10)
    assert [d.offset for d in rows][-1] == sub.offset
    assert await bus.redis.zscore(bus.user_keys.live("alice"), "s") > 1


async def test_a_nodes_own_submit_stays_one_script_past_the_liveness_checks_age(
        bus: Bus) -> None:
    """Issue 13, session 20: an edge's SUBMIT kept its fan-out in the script only while its
    check of the session's node (its own) was under ``NODE_CHECK_S`` old; past that (a
    session's next turn ~6 s later at 40 sessions) it went out apart: an ``EXISTS`` of the
    node's heartbeat key, then the fan-out, queue entry and live score in a pipeline, three
    round trips (~0.7 Redis reads a turn of the 40-session bench). The node's heartbeat,
    every ``HEARTBEAT_S``, now counts as that check: the heartbeat key was just written."""
    await bus.heartbeat_node("n1")
    await bus.open_session("s", "alice", "n1")
    await bus.submit("s", "m0", "hi", user="alice")
    bus._node_checked[b"n1"] = (time.monotonic() - 2 * K.NODE_CHECK_S, True)  # checked long ago
    await bus.heartbeat_node("n1")  # the edge's heartbeat comes meanwhile
    sub, calls, pipelines = await _submit_counted(bus)
    assert (calls, pipelines) == (["EVALSHA"], 0)
    rows = await bus.read_delivery("n1", b"0-0", 10)
    assert [d.offset for d in rows][-1] == sub.offset
    # a node that stopped heartbeating is checked again, as before: its key gone, no copy
    await bus.redis.delete(bus.keys.node_alive("n1"))
    bus._node_checked[b"n1"] = (time.monotonic() - 2 * K.NODE_CHECK_S, True)
    late = await bus.submit("s", "m2", "again", user="alice")
    assert late.offset not in [d.offset for d in await bus.read_delivery("n1", b"0-0", 10)]


async def test_a_lock_the_worker_left_behind_is_freed_with_no_turn_pending(
        redis_server: RedisServer) -> None:
    """START takes the lock, so a worker with no turn to run takes none; a lock it left behind
    (Redis failed before its release) must still be freed when it finds no turn pending, as
    ACQUIRE + RELEASE did: else a turn submitted next is acked by any other worker (the lock
    is "held") and waits for the lease."""
    bus = Bus(connect(redis_server.url), prefix=f"t{uuid.uuid4().hex[:10]}", shards=4)
    try:
        await bus.ensure_groups()
        worker = Worker(bus, fast, model_provider(ModelConfig(demo_word_delay=0)),
                        WorkerConfig(block_ms=20, coalesce_ms=1000), name="w-left")
        await bus.open_session("s", "alice")
        await bus.submit("s", "m0", "hello there", user="alice")
        await worker.run(burst=True)
        assert not await bus.redis.exists(bus.keys.lock("s"))
        await bus.redis.set(bus.keys.lock("s"), "w-left", px=30_000)
        inbound = bus.keys.inbound(shard_for("s", bus.shards), DEFAULT_AGENT)
        await bus.redis.xadd(inbound, {"s": "s", "o": 2})  # an entry with no turn behind it
        await worker.run(burst=True)
        assert not await bus.redis.exists(bus.keys.lock("s"))
    finally:
        await bus.close()


async def test_a_turns_round_trips(redis_server: RedisServer,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13 (roundtrips): a turn alone in its session, with a live node holding it, costs
    the worker 2 round trips (its polling left out) when its reply ends within its first
    piece's gathering (``FIRST_GATHER_S``, session 19; lengthened here so that a loaded
    machine cannot make the count vary): START (which reads the turn its shard entry names
    and checks it is the first pending one: no XRANGE before it since session 13; its script
    copies its events to the node) and one pipeline with the ``speaking`` state's APPEND
    (its script copying it to the node: sessions/deferred_appends.py, session 12), the text
    and the ending (session 14), whose script also copies it to the node and acks the
    inbound entry (single Redis, the node known alive). The memory read rides in START's
    reply (no LRANGE). Were 9, then 7 with START's and the ending's fan-outs (and the XACK)
    pipelines of their own, then 5, 4, 3, 2 (sessions 12 to 16), 3 with the first piece sent
    at once (session 17: the ending then went in the next tick), 2 again. A turn pending
    after another comes with that one's ending (no XRANGE of its own); an entry whose turn
    ended that way finds it stale in START, then reads the pending turns. The entries are
    acked all the same, and the memory holds the turns."""
    monkeypatch.setattr(coalescer, "FIRST_GATHER_S", 0.3)
    bus = Bus(connect(redis_server.url), prefix=f"t{uuid.uuid4().hex[:10]}", shards=4)
    calls: list[str] = []
    command, pipeline = bus.redis.execute_command, bus.redis.pipeline

    async def counted(*args: Any, **kw: Any) -> Any:
        calls.append(str(args[0]).upper())
        return await command(*args, **kw)

    def piped(*args: Any, **kw: Any) -> Any:
        calls.append("pipeline")
        return pipeline(*args, **kw)

    try:
        worker = await _opened_with_worker(bus)
        inbound = bus.keys.inbound(shard_for("s", bus.shards), DEFAULT_AGENT)
        per_turn = []
        for i in range(3):
            await bus.submit("s", f"m{i}", "hello there", user="alice")
            (claim,) = await bus.claim([(DEFAULT_AGENT, shard_for("s", bus.shards))],
                                       worker.name, 10, 20)
            calls.clear()
            bus.redis.execute_command, bus.redis.pipeline = counted, piped
            try:
                await worker._handle(claim)  # the turn path alone: no polling, no side loop
            finally:
                bus.redis.execute_command, bus.redis.pipeline = command, pipeline
            per_turn.append(list(calls))
        assert per_turn[1] == per_turn[2] == ["EVALSHA", "pipeline"], per_turn
        # two turns pending: the second comes with the first's ending (one XRANGE for both)
        for i in range(3, 5):
            await bus.submit("s", f"m{i}", "hello there", user="alice")
        first, second = await bus.claim([(DEFAULT_AGENT, shard_for("s", bus.shards))],
                                        worker.name, 10, 20)
        calls.clear()
        bus.redis.execute_command, bus.redis.pipeline = counted, piped
        try:
            await worker._handle(first)
        finally:
            bus.redis.execute_command, bus.redis.pipeline = command, pipeline
        # each turn START and one pipeline (its text, its ending): no XRANGE, no script apart
        assert calls == ["EVALSHA", "pipeline"] * 2, calls
        calls.clear()
        bus.redis.execute_command, bus.redis.pipeline = counted, piped
        try:  # its turn ended with the first's claim: START finds it stale, nothing pending
            await worker._handle(second)
        finally:
            bus.redis.execute_command, bus.redis.pipeline = command, pipeline
        assert calls[:3] == ["EVALSHA", "XRANGE", "EVALSHA"], calls
        await worker.acks.close()  # the second's entry: acked by the acker (entry_acks.py)
        assert (await bus.redis.xpending(inbound, "agents"))["pending"] == 0
        assert not await bus.redis.exists(bus.keys.lock("s"))
        stored = await bus.redis.lrange(bus.keys.memory("s"), 0, -1)
        assert len(stored) == 10  # each turn's user message and reply
        await asyncio.gather(*worker.chunks._sending)  # the gathering ticks, found empty
    finally:
        await bus.close()


async def test_every_key_of_a_session_keeps_a_ttl_and_the_ending_renews_it(
        redis_server: RedisServer) -> None:
    """Issue 13, session 13: START and ``speaking``'s APPEND no longer renew the log's and
    meta's ttl (SUBMIT did, for the turn). Nothing leaks for that: after a turn every key the
    session has carries a ttl, and the ending renews the log and meta (a session lives
    SESSION_TTL from its last turn's end, as before), here from a ttl lowered to 1,000 s as if
    the turn had waited in its queue."""
    bus = Bus(connect(redis_server.url), prefix=f"t{uuid.uuid4().hex[:10]}", shards=4)
    try:
        worker = await _opened_with_worker(bus)
        for i in range(2):
            await bus.submit("s", f"m{i}", "hello there", user="alice")
            for key in (bus.keys.meta("s"), bus.keys.log("s")):
                await bus.redis.expire(key, 1000)
            await worker.run(burst=True)
            kinds = [orjson.loads(e)["type"] for _, e in (await bus.replay("s", 0, None)).events]
            assert kinds.count("reply") == i + 1
            ttls = {key: await bus.redis.ttl(key) for key in bus.keys.session_keys("s")
                    if await bus.redis.exists(key)}
            assert {bus.keys.meta("s"), bus.keys.log("s"), bus.keys.memory("s")} <= set(ttls)
            assert all(t > 0 for t in ttls.values()), ttls
            for key in (bus.keys.meta("s"), bus.keys.log("s"), bus.keys.memory("s")):
                assert ttls[key] > K.SESSION_TTL - 60, (key, ttls[key])
    finally:
        await bus.close()


async def _opened_with_worker(bus: Bus) -> Worker:
    """Session ``s`` open on node ``n1``, and a worker for it (demo model, no delay; the
    coalescer's tick longer than a turn)."""
    await bus.ensure_groups()
    await bus.heartbeat_node("n1")
    await bus.open_session("s", "alice", "n1")
    return Worker(bus, fast, model_provider(ModelConfig(demo_word_delay=0)),
                  WorkerConfig(block_ms=20, coalesce_ms=1000))


async def _submit_counted(bus: Bus) -> tuple[Any, list[str], int]:
    """A SUBMIT of "m1" in session "s", with the commands it sent alone and the pipelines it
    opened."""
    calls: list[str] = []
    pipelines: list[int] = []
    command, pipeline = bus.redis.execute_command, bus.redis.pipeline

    async def counted(*args: Any, **kw: Any) -> Any:
        calls.append(str(args[0]))
        return await command(*args, **kw)

    def piped(*args: Any, **kw: Any) -> Any:
        pipelines.append(1)
        return pipeline(*args, **kw)

    bus.redis.execute_command, bus.redis.pipeline = counted, piped
    try:
        sub = await bus.submit("s", "m1", "hello", user="alice")
    finally:
        bus.redis.execute_command, bus.redis.pipeline = command, pipeline
    return sub, calls, len(pipelines)
