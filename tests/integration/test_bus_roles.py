"""The bus by role (sessions/roles.py) against a real Redis (unique prefix per test): the
turn queue's claims and what they carry, lag, and one node membership calling back its
handler."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import orjson
import pytest

from agentia.codes import BusUnavailable
from sessions import events as E
from sessions import keys as K
from sessions.backend_redis import Backend
from sessions.bus import Bus, LockLost, Turn
from sessions.membership import Membership
from sessions.roles import ChunkAt, Delivered, NodeDelivery, Partial, Submitted


async def test_a_claim_is_held_until_acked(bus: Bus) -> None:
    await bus.ensure_groups()
    sub = await _submit(bus, "s1")
    shard = K.shard_for("s1", bus.shards)
    [claim] = await bus.claim([shard], "w1", 10, 100)
    assert (claim.session, claim.reclaimed) == ("s1", False)
    assert await bus.shard_lag(shard) == 1  # read, not acked: still counted
    assert await bus.inbound_lag("s1") == 1
    assert await bus.claim([shard], "w1", 10, 100) == []  # received once
    assert await bus.reclaim(shard, "w2", 60_000, 10) == []  # not idle long enough
    [again] = await bus.reclaim(shard, "w2", 0, 10)  # another worker takes it over
    assert (again.id, again.reclaimed) == (claim.id, True)
    await again.ack()
    assert await bus.shard_lag(shard) == 0
    assert sub.offset == 1


async def test_nack_gives_the_session_to_another_worker(bus: Bus) -> None:
    await bus.ensure_groups()
    await _submit(bus, "s2")
    shard = K.shard_for("s2", bus.shards)
    [claim] = await bus.claim([shard], "w1", 10, 100)
    await claim.nack()
    [fresh] = await bus.claim([shard], "w2", 10, 100)
    assert fresh.session == "s2" and fresh.id != claim.id
    assert await bus.shard_lag(shard) == 1  # the old entry acked, the new one pending


async def test_dead_letter_records_the_turn(bus: Bus) -> None:
    await bus.ensure_groups()
    await _submit(bus, "s3")
    [claim] = await bus.claim([K.shard_for("s3", bus.shards)], "w1", 10, 100)
    turn = await bus.next_turn("s3")
    assert isinstance(turn, Turn) and turn.text == "hi"
    await claim.dead_letter(turn, 3, "the turn failed on every attempt")
    rows = await bus.redis.xrange(bus.keys.dead_letters(K.shard_for("s3", bus.shards)))
    assert [(f[b"s"], f[b"o"], f[b"attempts"], f[b"worker"]) for _, f in rows] == [
        (b"s3", b"1", b"3", b"w1")]


async def test_lag_of_a_shard_without_group_is_none(bus: Bus) -> None:
    with pytest.raises(Exception, match="no such key"):
        await bus.shard_lag(0)  # no stream at all
    assert await bus.inbound_lag("s4") == 0
    await bus.ensure_groups()
    assert await bus.has_group(0) and await bus.shard_lag(0) == 0


async def test_the_lags_of_several_shards_in_one_call(bus: Bus) -> None:
    """``shard_lags`` (the edge's overload check, session 17): each shard's unread + pending
    as ``shard_lag`` gives it, 0 for a shard with no stream or no group yet."""
    default, other = K.DEFAULT_AGENT, "nobody"
    assert await bus.shard_lags([(default, 0), (other, 0)]) == {(default, 0): 0, (other, 0): 0}
    await bus.ensure_groups()
    await _submit(bus, "s5")
    await _submit(bus, "s6")
    shards = {(default, K.shard_for(s, bus.shards)) for s in ("s5", "s6")}
    await bus.claim([k for _, k in shards], "w1", 1, 100)  # one read: pending, still counted
    lags = await bus.shard_lags(shards | {(other, 0)})
    assert lags == {**{s: await bus.shard_lag(s[1]) for s in shards}, (other, 0): 0}
    assert sum(lags.values()) == 2


async def test_user_sessions_and_owner(bus: Bus) -> None:
    await bus.open_session("s5", "ann")
    await bus.touch_user_sessions({("ann", "s5"): 100.0, ("ann", "s6"): 200.0})
    assert await bus.user_sessions("ann", 100) == [("s6", 200.0), ("s5", 100.0)]
    assert await bus.user_sessions("ann", 1) == [("s6", 200.0)]
    assert await bus.session_owner("s5") == "ann"
    assert await bus.session_owner("nope") is None


class _Handler:
    def __init__(self) -> None:
        self.events: list[tuple[str, int, dict[str, object]]] = []
        self.chunks: list[tuple[str, ChunkAt, dict[str, object]]] = []
        self.got = asyncio.Event()
        self.forgot = 0
        self.back = 0
        self.outages = 0
        self.beats: list[bool] = []
        self.deleted: list[str] = []
        self.frames: list[tuple[str, dict[str, object]]] = []

    def deliver(self, sid: str, offset: int, event: bytes) -> None:
        self.events.append((sid, offset, orjson.loads(event)))
        self.got.set()

    def deliver_chunk(self, sid: str, chunk: ChunkAt, frame: bytes) -> None:
        self.chunks.append((sid, chunk, orjson.loads(frame)))
        self.got.set()

    def deliver_frame(self, sid: str, frame: bytes) -> None:
        self.frames.append((sid, orjson.loads(frame)))
        self.got.set()

    def session_deleted(self, sid: str) -> None:
        self.deleted.append(sid)
        self.got.set()

    def stream_back(self) -> None:
        self.back += 1

    async def forgotten(self) -> None:
        self.forgot += 1

    def heartbeat_done(self, ok: bool) -> None:
        self.beats.append(ok)

    def outage(self) -> None:
        self.outages += 1


async def test_membership_delivers_the_sessions_events(bus: Bus) -> None:
    handler = _Handler()
    member = Membership(bus, "n1", handler)
    assert await member.beat() is False  # new to Redis
    assert await member.beat() is True
    await bus.open_session("s7", "ann", "n1")
    task = asyncio.create_task(member.deliver_forever())
    try:
        await bus.append("s7", E.call("joined", "n1", 1.0))
        await asyncio.wait_for(handler.got.wait(), 5)
        assert handler.events == [("s7", 1, {"type": "call", "state": "joined",
                                             "node": "n1", "ts": 1.0})]
        # an off-log frame: to the nodes of the session but the one it names
        handler.got.clear()
        assert await bus.stream_frame("s7", b'{"type":"transcript","final":false}', but="n1")
        assert await bus.stream_frame("s7", b'{"type":"transcript","final":false,"n":2}')
        await asyncio.wait_for(handler.got.wait(), 5)
        assert handler.frames == [("s7", {"type": "transcript", "final": False, "n": 2})]
        # a deleted session: the node hears it as a notice, not as an event
        handler.got.clear()
        await Backend(bus).delete_session("s7")
        await asyncio.wait_for(handler.got.wait(), 5)
    finally:
        task.cancel()
    assert handler.deleted == ["s7"] and len(handler.events) == 1 and len(handler.frames) == 1
    assert "n1" in await bus.live_nodes(time.time() - K.NODE_TTL)
    await member.leave()
    assert "n1" not in await bus.live_nodes(time.time() - K.NODE_TTL)


async def test_chunks_reach_the_nodes_and_the_partial_not_the_log(bus: Bus) -> None:
    """A running turn's chunks: delivered to the session's node with their run and seq,
    kept in the partial buffer (what a resume reads), never in the log; the turn's end drops
    the buffer, and a chunk after that does not create it again."""
    handler = _Handler()
    member = Membership(bus, "n3", handler)
    await member.beat()
    await bus.open_session("s9", "ann", "n3")
    sub = await bus.submit("s9", "m1", "hi", user="ann")
    run = f"{sub.offset}:1:ab12"
    await bus.append("s9", E.turn_start(sub.offset, 1), run=run)
    for seq, text in enumerate(["It ", "is ", "late."], 1):
        await bus.stream_chunk("s9", run, seq, orjson.dumps(E.chunk(sub.offset, 1, seq, text)),
                               text)
    await bus.redis.rpushx(bus.keys.partial("s9"), "1:0:stale|IGNORED")  # an older run's
    task = asyncio.create_task(member.deliver_forever())
    try:
        while len(handler.chunks) < 3:
            handler.got.clear()
            await asyncio.wait_for(handler.got.wait(), 5)
    finally:
        task.cancel()
    assert [(c.turn, c.attempt, c.run, c.seq) for _, c, _ in handler.chunks] == [
        (sub.offset, 1, run.encode(), n) for n in (1, 2, 3)]
    assert [f["text"] for _, _, f in handler.chunks] == ["It ", "is ", "late."]
    assert await bus.partial("s9") == Partial(sub.offset, 1, run.encode(), 3, "It is late.")
    log_types = [orjson.loads(e)["type"] for _, e in (await bus.replay("s9", 0, None)).events]
    assert log_types == ["user", "turn_start"]
    await bus.append("s9", E.reply(sub.offset, "It is late."), done=sub.offset)
    assert await bus.partial("s9") is None
    await bus.stream_chunk("s9", run, 4, b"{}", "late")  # a worker that lost the lock
    assert not await bus.redis.exists(bus.keys.partial("s9"))


class _Flaky:
    """A NodeDelivery whose reads fail ``fails`` times, then return one event; whose
    heartbeat says Redis forgot the node."""

    def __init__(self, bus: Bus, fails: int) -> None:
        self.bus, self.fails = bus, fails

    def __getattr__(self, name: str) -> object:
        return getattr(self.bus, name)

    async def read_delivery(self, node: str, last_id: bytes, block_ms: int = 1000
                            ) -> list[Delivered]:
        if self.fails:
            self.fails -= 1
            raise BusUnavailable()
        await asyncio.sleep(0.01)
        return [Delivered(b"1-1", "s", 1, b'{"type":"call"}')] if last_id == b"0-0" else []

    async def heartbeat_node(self, node: str) -> bool:
        return False


async def test_membership_catches_up_after_an_outage_and_re_registers(bus: Bus) -> None:
    handler = _Handler()
    flaky: NodeDelivery = _Flaky(bus, 2)  # type: ignore[assignment]
    member = Membership(flaky, "n2", handler)
    reader = asyncio.create_task(member.deliver_forever())
    beater = asyncio.create_task(member.heartbeat_forever())
    try:
        await asyncio.wait_for(handler.got.wait(), 5)
    finally:
        reader.cancel()
        beater.cancel()
    assert handler.outages == 2 and handler.back == 1  # two failed reads, then a catch-up
    assert handler.events == [("s", 1, {"type": "call"})]
    assert handler.forgot >= 1 and handler.beats[0] is True


async def _submit(bus: Bus, sid: str) -> Submitted:
    await bus.open_session(sid, "ann")
    return await bus.submit(sid, f"c-{sid}", "hi", user="ann")


class _Timed:
    """A NodeDelivery whose reads each return one event, answered at once or after
    ``slow_s`` (the reads listed in ``slow``); it records when each read was asked."""

    def __init__(self, slow: set[int], slow_s: float) -> None:
        self.asked: list[float] = []
        self.slow, self.slow_s = slow, slow_s
        self.fifth = asyncio.Event()

    async def read_delivery(self, node: str, last_id: bytes, block_ms: int = 1000
                            ) -> list[Delivered]:
        n = len(self.asked)
        self.asked.append(time.monotonic())
        if n == 4:
            self.fifth.set()
        if n in self.slow:
            await asyncio.sleep(self.slow_s)
        return [Delivered(f"1-{n + 1}".encode(), "s", n + 1, b'{"type":"call"}')]


async def test_membership_lingers_only_between_dense_reads() -> None:
    """Reads answered at once are followed by a pause of ``linger_s``; a read that waited
    for its event (a quiet stream) is followed by the next at once; no event is lost."""
    handler = _Handler()
    timed = _Timed(slow={2}, slow_s=0.6)
    member = Membership(timed, "n3", handler, linger_s=0.3)  # type: ignore[arg-type]
    reader = asyncio.create_task(member.deliver_forever())
    try:
        await asyncio.wait_for(timed.fifth.wait(), 10)
    finally:
        reader.cancel()
    gaps = [b - a for a, b in itertools.pairwise(timed.asked)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.3  # dense: lingered
    assert 0.6 <= gaps[2] < 0.9  # the slow read itself, then no linger after it
    assert gaps[3] >= 0.3
    assert [offset for _, offset, _ in handler.events][:4] == [1, 2, 3, 4]


async def test_start_attempt_begins_and_appends_turn_start_in_one_script(bus: Bus) -> None:
    """START: counts the attempt, appends the turn_start (the very bytes events.py builds)
    and starts the run's partial buffer; a cancelled turn or one past its attempts gets no
    turn_start; another worker's call is refused."""
    await bus.open_session("st", "ann")
    sub = await bus.submit("st", "m1", "hi", user="ann")
    assert await bus.try_lock("st", "w1", 30_000)
    with pytest.raises(LockLost):
        await bus.start_attempt("st", sub.offset, "w2", max_attempts=3)
    started = await bus.start_attempt("st", sub.offset, "w1", max_attempts=3)
    assert (started.attempt, started.cancelled) == (1, False)
    assert started.run.startswith(f"{sub.offset}:1:")
    ((_, raw),) = (await bus.replay("st", sub.offset, None)).events
    assert raw == orjson.dumps(E.turn_start(sub.offset, 1))
    assert await bus.redis.lrange(bus.keys.partial("st"), 0, -1) == [started.run.encode()]
    again = await bus.start_attempt("st", sub.offset, "w1", max_attempts=3, again=True)
    assert again.attempt == 1 and again.run != started.run  # an outage's rerun: same attempt
    past = await bus.start_attempt("st", sub.offset, "w1", max_attempts=1)
    assert (past.attempt, past.run) == (2, "")
    await bus.cancel("st", sub.offset)
    cancelled = await bus.start_attempt("st", sub.offset, "w1", max_attempts=9)
    assert cancelled.cancelled and cancelled.run == ""
    types = [orjson.loads(e)["type"] for _, e in (await bus.replay("st", 0, None)).events]
    assert types == ["user", "turn_start", "turn_start"]


async def test_start_attempt_with_a_lease_takes_the_lock_in_the_same_script(bus: Bus) -> None:
    """Issue 13 (turn-scripts): START with ``lease_ms`` takes a free lock (no ACQUIRE before
    it) with that lease, keeps its own owner's, and with another worker's lock answers
    ``busy`` having written nothing (no attempt counted, no event, no partial buffer); a
    deleted session is not locked."""
    await bus.open_session("sl", "ann")
    sub = await bus.submit("sl", "m1", "hi", user="ann")
    started = await bus.start_attempt("sl", sub.offset, "w1", max_attempts=3, lease_ms=30_000)
    assert (started.attempt, started.busy) == (1, False) and started.run
    assert await bus.redis.get(bus.keys.lock("sl")) == b"w1"
    assert 29_000 < await bus.redis.pttl(bus.keys.lock("sl")) <= 30_000
    seq = (await bus.session_meta("sl"))["seq"]
    busy = await bus.start_attempt("sl", sub.offset, "w2", max_attempts=3, lease_ms=30_000)
    assert busy.busy and (busy.attempt, busy.run) == (0, "")
    meta = await bus.session_meta("sl")
    assert (meta["seq"], meta[f"a:{sub.offset}"]) == (seq, "1")
    assert await bus.redis.lrange(bus.keys.partial("sl"), 0, -1) == [started.run.encode()]
    again = await bus.start_attempt("sl", sub.offset, "w1", max_attempts=3, lease_ms=30_000)
    assert again.attempt == 2 and not again.busy  # its own lock: taken again, counted
    await bus.redis.delete(bus.keys.lock("sl"), bus.keys.meta("sl"))
    gone = await bus.start_attempt("sl", sub.offset, "w2", max_attempts=3, lease_ms=30_000)
    assert gone.cancelled and not gone.busy and gone.run == ""
    assert not await bus.redis.exists(bus.keys.lock("sl"), bus.keys.meta("sl"))


async def test_start_attempt_of_a_turn_known_by_its_entry_reads_it_and_checks_it(
        bus: Bus) -> None:
    """Issue 13, session 13: START with ``first`` (the worker knows the turn by its shard
    entry's offset only) reads the turn in the same script: begun and returned when it is the
    first pending turn; ``stale`` with nothing written and no lock taken when another turn is
    ahead of it or it is not pending; during a takeover the turn's text is queued for the
    agent's memory from the turn itself."""
    await bus.open_session("sf", "ann")
    one = await bus.submit("sf", "m1", "hi / \"there\" é", user="ann")
    two = await bus.submit("sf", "m2", "and then", user="ann")
    seq = (await bus.session_meta("sf"))["seq"]
    ahead = await bus.start_attempt("sf", two.offset, "w1", max_attempts=3, lease_ms=30_000,
                                    first=True)
    assert ahead.stale and (ahead.attempt, ahead.run, ahead.turn) == (0, "", None)
    assert not await bus.redis.exists(bus.keys.lock("sf"))
    assert (await bus.session_meta("sf"))["seq"] == seq
    started = await bus.start_attempt("sf", one.offset, "w1", max_attempts=3, lease_ms=30_000,
                                      first=True)
    assert started.run and not started.stale and started.turn is not None
    assert (started.turn.offset, started.turn.client_id, started.turn.text, started.turn.user,
            started.turn.source) == (one.offset, "m1", "hi / \"there\" é", "ann", "chat")
    assert not started.turn.unread
    await bus.end_turn("sf", E.reply(one.offset, "ok", "default"), one.offset, "w1")
    gone = await bus.start_attempt("sf", one.offset, "w1", max_attempts=3, lease_ms=30_000,
                                   first=True)
    assert gone.stale
    await bus.redis.hset(bus.keys.meta("sf"), "op", "bob")
    held = await bus.start_attempt("sf", two.offset, "w1", max_attempts=3, lease_ms=30_000,
                                   first=True)
    assert held.held and held.turn is not None and held.turn.text == "and then"
    (note,) = await bus.redis.lrange(bus.keys.notes("sf"), 0, -1)
    assert orjson.loads(note) == {"role": "user", "content": "and then"}


async def test_the_ending_writes_the_turns_memory_items(bus: Bus) -> None:
    """Issue 13 (turn-scripts): RedisMemory keeps the SDK's items until the turn's ending,
    whose APPEND writes them (fenced, idempotent with it); reads see them before; a worker
    that lost the lock writes neither the ending nor the items."""
    await bus.open_session("sm", "ann")
    sub = await bus.submit("sm", "m1", "hi", user="ann")
    assert (await bus.start_attempt("sm", sub.offset, "w1", max_attempts=3,
                                    lease_ms=30_000)).run
    mem = bus.memory("sm", sub.offset, "w1")
    await mem.add_items([{"role": "user", "content": "hi"}])
    await mem.add_items([{"role": "assistant", "content": "hello"}])
    assert [i["content"] for i in await mem.get_items()] == ["hi", "hello"]  # type: ignore[typeddict-item]
    assert [i["content"] for i in await mem.get_items(1)] == ["hello"]  # type: ignore[typeddict-item]
    assert await bus.redis.lrange(bus.keys.memory("sm"), 0, -1) == []  # not written yet
    other = bus.memory("sm", sub.offset, "w2")
    await other.add_items([{"role": "user", "content": "stale"}])
    with pytest.raises(LockLost):
        await bus.end_turn("sm", E.reply(sub.offset, "x"), sub.offset, "w2",
                           remember=other.take_unsaved())
    assert await bus.end_turn("sm", E.reply(sub.offset, "hello"), sub.offset, "w1",
                              remember=mem.take_unsaved())
    stored = await bus.redis.lrange(bus.keys.memory("sm"), 0, -1)
    assert stored == [b'%d|{"role":"user","content":"hi"}' % sub.offset,
                      b'%d|{"role":"assistant","content":"hello"}' % sub.offset]
    assert mem.unsaved == [] and not await bus.redis.exists(bus.keys.lock("sm"))


async def test_an_append_later_reaches_the_nodes_with_the_sessions_next_tick(bus: Bus) -> None:
    """Issue 13 (turn-scripts, then session 12): ``append(later=True)`` (the ``speaking``
    state) on a single Redis with the session's nodes known is kept, and made in the session's
    next tick of chunks, before them, in the same pipeline: the log and the nodes get it then
    (sessions/deferred_appends.py); another append of the session sends it first (offsets
    stay in order). The scripts are loaded first, as a worker's start does (``preload_scripts``):
    on a fresh script cache the kept append meets NOSCRIPT in the tick and runs apart, after the
    chunks (the test failed when run alone)."""
    await bus.preload_scripts()
    await bus.heartbeat_node("n7")
    await bus.open_session("lt", "ann", "n7")
    sub = await bus.submit("lt", "m1", "hi", user="ann")
    run = f"{sub.offset}:1:ab12"
    speaking = E.state(sub.offset, "speaking", "demo")
    last = (await bus.read_delivery("n7", b"0-0", 10))[-1].id
    assert await bus.append("lt", [speaking], later=True) == 0  # kept for the tick
    assert (await bus.replay("lt", sub.offset, None)).events == []
    assert await bus.read_delivery("n7", last, 10) == []  # not yet: waits for the tick
    frame = orjson.dumps(E.chunk(sub.offset, 1, 1, "Hel"))
    pipelines: list[int] = []
    pipeline = bus.redis.pipeline

    def piped(*args: Any, **kw: Any) -> Any:
        pipelines.append(1)
        return pipeline(*args, **kw)

    bus.redis.pipeline = piped
    try:
        await bus.stream_chunks([("lt", run, 1, frame, "")])
    finally:
        bus.redis.pipeline = pipeline
    (off, _), = (await bus.replay("lt", sub.offset, None)).events
    rows = await _read_n(bus, "n7", last, 2)
    assert [(d.offset, d.event) for d in rows] == [(off, orjson.dumps(speaking)), (0, frame)]
    assert len(pipelines) == 1
    # kept for later, then another append of the session: made and delivered in order
    assert await bus.append("lt", [speaking], later=True) == 0
    off3 = await bus.append("lt", [E.state(sub.offset, "idle", "demo")])
    assert [o for o, _ in (await bus.replay("lt", off, None)).events] == [off + 1, off3]
    rows = await _read_n(bus, "n7", rows[-1].id, 2)
    assert [d.offset for d in rows] == [off + 1, off3]


async def _read_n(bus: Bus, node: str, last: bytes, n: int) -> list[Any]:
    """The next ``n`` events of ``node``'s delivery stream, in at most ``n`` reads: a read in
    flight (sessions/delivery_reads.py) is answered after the first entry a pipeline writes,
    the next read takes the rest."""
    rows: list[Any] = []
    for _ in range(n):
        rows += await bus.read_delivery(node, rows[-1].id if rows else last, 10)
        if len(rows) >= n:
            break
    return rows


async def test_a_ticks_pieces_for_one_node_are_one_stream_entry(bus: Bus) -> None:
    """stream_chunks packs the pieces of several sessions for the same node into one delivery
    entry; the reader unpacks each with its session, run, seq and frame, in order."""
    await bus.heartbeat_node("n5")
    runs = {}
    for sid in ("p1", "p2"):
        await bus.open_session(sid, "ann", "n5")
        sub = await bus.submit(sid, "m1", "hi", user="ann")
        runs[sid] = f"{sub.offset}:1:cd34"
        await bus.append(sid, E.turn_start(sub.offset, 1), run=runs[sid])
    before = await bus.redis.xlen(bus.keys.delivery("n5"))
    pieces = [(sid, runs[sid], 1, orjson.dumps(E.chunk(1, 1, 1, f"to {sid}\t\n")), f"to {sid}")
              for sid in ("p1", "p2")]
    await bus.stream_chunks(pieces)
    assert await bus.redis.xlen(bus.keys.delivery("n5")) == before + 1
    rows = await bus.read_delivery("n5", b"0-0", block_ms=10)
    chunks = [(d.session, d.chunk.run, d.chunk.seq, orjson.loads(d.event)["text"])
              for d in rows if d.chunk is not None]
    assert chunks == [("p1", runs["p1"].encode(), 1, "to p1\t\n"),
                      ("p2", runs["p2"].encode(), 1, "to p2\t\n")]


async def test_a_tick_rereads_stale_sessions_nodes_in_its_own_round_trip(bus: Bus) -> None:
    """Sessions whose known nodes are older than NODES_FRESH_S are re-read (HKEYS) inside the
    tick's own pipeline, not in a round trip before it (issue 13: with turns started at
    different moments, most ticks had one, a wake-up of Redis more per tick; and one round
    trip per session was the 200-stream stall of loadtest/bench_worker.py): a tick is one
    round trip, sent to the nodes known so far, and the next tick reaches the nodes read."""
    await bus.heartbeat_node("n6")
    sids = [f"q{n}" for n in range(40)]
    for sid in sids:
        await bus.open_session(sid, "ann", "n6")
        sub = await bus.submit(sid, "m1", "hi", user="ann")
        await bus.append(sid, E.turn_start(sub.offset, 1), run=f"{sub.offset}:1:ef")
    for sid in sids:  # as if the turns had streamed for longer than NODES_FRESH_S, and the
        # node had registered after the worker's last view
        bus._session_nodes[sid] = (time.monotonic() - K.NODES_FRESH_S - 1, [])
    sent: list[object] = []
    pipelines = 0
    original, pipeline = bus.redis.execute_command, bus.redis.pipeline

    async def counted(*args: object, **kw: object) -> object:
        sent.append(args[0])
        return await original(*args, **kw)

    def counted_pipeline(*args: Any, **kw: Any) -> Any:
        nonlocal pipelines
        pipelines += 1
        return pipeline(*args, **kw)

    before = await bus.redis.xlen(bus.keys.delivery("n6"))
    bus.redis.execute_command = counted  # type: ignore[method-assign]
    bus.redis.pipeline = counted_pipeline  # type: ignore[method-assign]

    def tick(seq: int) -> list[tuple[str, str, int, bytes, str]]:
        return [(sid, "1:1:ef", seq, orjson.dumps(E.chunk(1, 1, seq, sid)), "")
                for sid in sids]

    await bus.stream_chunks(tick(1))
    assert (sent, pipelines) == ([], 1)  # one round trip, the HKEYS inside it
    assert await bus.redis.xlen(bus.keys.delivery("n6")) == before  # no node known yet
    assert all(bus._session_nodes[sid][1] == [b"n6"] for sid in sids)
    sent.clear()  # that XLEN
    await bus.stream_chunks(tick(2))
    assert (sent, pipelines) == ([], 2)  # fresh now: nothing re-read
    bus.redis.execute_command, bus.redis.pipeline = original, pipeline  # type: ignore[method-assign]
    rows = await bus.read_delivery("n6", b"0-0", block_ms=10)
    assert {d.session for d in rows if d.chunk is not None} == set(sids)
    assert await bus.redis.xlen(bus.keys.delivery("n6")) == before + 1


async def test_an_appends_fan_out_rides_in_its_script(bus: Bus) -> None:
    """On a single Redis an append copies its events to the session's nodes known alive inside
    its own script (issue 13: no fan-out round trip after it), once each, at their offsets;
    a node the worker did not know of yet (registered since its last view) gets them from a
    fan-out of its own after the script, as before, and not twice."""
    for node in ("n10", "n11"):
        await bus.heartbeat_node(node)
    bus._node_checked.clear()  # those were the edges' heartbeats: this client checked none
    await bus.open_session("f1", "ann", "n10")
    sub = await bus.submit("f1", "c1", "hi", user="ann")  # the worker's view: n10, alive
    await bus.append("f1", E.turn_start(sub.offset, 1))
    await bus.register("f1", "n11")
    sent: list[object] = []
    pipelines = 0
    command, pipeline = bus.redis.execute_command, bus.redis.pipeline

    async def counted(*args: object, **kw: object) -> object:
        sent.append(args[0])
        return await command(*args, **kw)

    def counted_pipeline(*args: Any, **kw: Any) -> Any:
        nonlocal pipelines
        pipelines += 1
        return pipeline(*args, **kw)

    bus.redis.execute_command = counted  # type: ignore[method-assign]
    bus.redis.pipeline = counted_pipeline  # type: ignore[method-assign]
    try:
        ending = [E.state(sub.offset, "idle", "demo"), E.reply(sub.offset, "Hi.", "demo")]
        last = await bus.append("f1", ending)
        # the script (it fanned out to n10), then n11's fan-out (EXISTS n11, its XADDs)
        assert (sent, pipelines) == (["EVALSHA"], 2)
        sent.clear()
        assert await bus.append("f1", E.reply(sub.offset, "Again.", "demo")) == last + 1
        assert (sent, pipelines) == (["EVALSHA"], 2)  # both known now: the script alone
    finally:
        bus.redis.execute_command, bus.redis.pipeline = command, pipeline  # type: ignore[method-assign]
    for node, since in (("n10", sub.offset), ("n11", 0)):
        rows = await bus.read_delivery(node, b"0-0", block_ms=10)
        got = [(d.offset, orjson.loads(d.event)["type"]) for d in rows if d.offset > since]
        want = [(last - 1, "state"), (last, "reply"), (last + 1, "reply")]
        assert got == ([(sub.offset + 1, "turn_start")] if node == "n10" else []) + want


async def test_a_submits_fan_out_and_queue_entry_ride_in_its_script(bus: Bus) -> None:
    """On a single Redis, once the edge knows the session's nodes alive, a submit is one round
    trip (issue 13): SUBMIT copies the user event to the nodes, queues the turn on the
    session's shard and raises the user's live score itself; a duplicate queues nothing new."""
    await bus.heartbeat_node("n12")
    await bus.open_session("u1", "ann", "n12")
    first = await bus.submit("u1", "c1", "one", user="ann")  # learns the node: as before
    live = bus.user_keys.live("ann")
    await bus.redis.zadd(live, {"u1": 1})
    sent: list[object] = []
    pipelines = 0
    command, pipeline = bus.redis.execute_command, bus.redis.pipeline

    async def counted(*args: object, **kw: object) -> object:
        sent.append(args[0])
        return await command(*args, **kw)

    def counted_pipeline(*args: Any, **kw: Any) -> Any:
        nonlocal pipelines
        pipelines += 1
        return pipeline(*args, **kw)

    bus.redis.execute_command = counted  # type: ignore[method-assign]
    bus.redis.pipeline = counted_pipeline  # type: ignore[method-assign]
    try:
        second = await bus.submit("u1", "c2", "two", user="ann")
        assert (sent, pipelines) == (["EVALSHA"], 0)
    finally:
        bus.redis.execute_command, bus.redis.pipeline = command, pipeline  # type: ignore[method-assign]
    assert second.offset == first.offset + 1 and not second.duplicate
    assert await bus.redis.zscore(live, "u1") > 1  # raised (XX GT), as the pipeline did
    inbound = bus.keys.inbound(K.shard_for("u1", bus.shards), await bus.default_agent())
    queued = [(f[b"s"], int(f[b"o"])) for _, f in await bus.redis.xrange(inbound)]
    assert queued == [(b"u1", first.offset), (b"u1", second.offset)]
    again = await bus.submit("u1", "c2", "two", user="ann")
    assert again.duplicate and again.offset == second.offset
    assert len(await bus.redis.xrange(inbound)) == 3  # a duplicate of an unfinished turn:
    # queued again (it recovers a lost enqueue), as before
    rows = await bus.read_delivery("n12", b"0-0", block_ms=10)
    users = [(d.offset, orjson.loads(d.event)["text"]) for d in rows if d.chunk is None]
    assert users == [(first.offset, "one"), (second.offset, "two")]


async def test_several_events_are_one_append_at_consecutive_offsets(bus: Bus) -> None:
    """START with ``then`` and APPEND with a list: one script each, the events at consecutive
    offsets, delivered to the session's node in order with those offsets; the lock fences the
    whole write."""
    handler = _Handler()
    member = Membership(bus, "n8", handler)
    await member.beat()
    await bus.open_session("m8", "ann", "n8")
    sub = await bus.submit("m8", "c1", "hi", user="ann")
    assert await bus.try_lock("m8", "w1", 30_000)
    thinking = E.state(sub.offset, "thinking", "demo")
    await bus.start_attempt("m8", sub.offset, "w1", max_attempts=3, then=[thinking])
    ending = [E.state(sub.offset, "idle", "demo"), E.reply(sub.offset, "Hi.", "demo")]
    assert await bus.append("m8", ending, done=sub.offset, owner="w1") == 5
    with pytest.raises(LockLost):
        await bus.append("m8", ending, owner="w2")
    want = ["user", "turn_start", "state", "state", "reply"]
    logged = [(o, orjson.loads(e)) for o, e in (await bus.replay("m8", 0, None)).events]
    assert [(o, e["type"]) for o, e in logged] == list(enumerate(want, 1))
    assert [e for _, e in logged[2:]] == [thinking, *ending]
    task = asyncio.create_task(member.deliver_forever())
    try:
        while len(handler.events) < 5:
            handler.got.clear()
            await asyncio.wait_for(handler.got.wait(), 5)
    finally:
        task.cancel()
    assert [(o, e) for _, o, e in handler.events] == logged


async def test_start_reads_the_memory_as_it_leaves_it(bus: Bus) -> None:
    """Issue 13 (roundtrips): with ``read_memory`` START's reply carries the session's memory
    items, after its own writes (here a posted note moved in, an earlier attempt's items
    rolled back), and RedisMemory's first read answers from them without Redis (the node's
    fan-out after START is unchanged: the nodes follow the items in the reply)."""
    await bus.heartbeat_node("n1")
    await bus.open_session("sr", "ann", "n1")
    sub = await bus.submit("sr", "m1", "hi", user="ann")
    key = bus.keys.memory("sr")
    await bus.redis.rpush(key, b'0|{"role":"user","content":"old"}',
                          b'%d|{"role":"user","content":"failed attempt"}' % sub.offset)
    # that attempt was counted (START): a turn's first attempt finds none of its items and
    # skips the rollback (session 15)
    await bus.redis.hset(bus.keys.meta("sr"), f"a:{sub.offset}", 1)
    await Backend(bus).post_message("sr", "system", "a note", "ops")
    started = await bus.start_attempt("sr", sub.offset, "w1", max_attempts=3, lease_ms=30_000,
                                      read_memory=True)
    stored = await bus.redis.lrange(key, 0, -1)
    assert started.run and len(stored) == 2, (started, stored)
    assert started.memory == [orjson.loads(r.partition(b"|")[2]) for r in stored]
    assert stored[0] == b'0|{"role":"user","content":"old"}' and stored[1].startswith(b"n|")
    delivered = await bus.read_delivery("n1", b"0-0", 10)
    assert [orjson.loads(d.event)["type"] for d in delivered][-1] == "turn_start"
    mem = bus.memory("sr", sub.offset, "w1")
    mem.preload(started.memory)
    await bus.redis.delete(key)  # the first read must not go to Redis
    assert [i["content"] for i in await mem.get_items()] == ["old", "[system ops] a note"]  # type: ignore[typeddict-item]
    assert await mem.get_items() == []  # later reads do
    assert (await bus.start_attempt("sr", sub.offset, "w1", max_attempts=3)).memory is None


async def test_the_ending_acks_the_entry_when_it_frees_the_lock(bus: Bus) -> None:
    """Issue 13 (roundtrips): ``end_turn``'s ``ack`` (the claim's XACK) goes in the ending's
    fan-out pipeline, only once the ending freed the lock: a turn still pending keeps the
    entry pending (the worker runs it, then acks; the ending hands it the turn), a worker
    that lost the lock acks nothing."""
    await bus.ensure_groups()
    await bus.open_session("sa", "ann")
    shard = K.shard_for("sa", bus.shards)
    first = await bus.submit("sa", "m1", "one", user="ann")
    second = await bus.submit("sa", "m2", "two", user="ann")
    claims = await bus.claim([shard], "w1", 10, 100)
    claim = claims[0]
    pending = (await bus.redis.xpending(bus.keys.inbound(shard), K.GROUP))["pending"]
    assert await bus.start_attempt("sa", first.offset, "w1", max_attempts=3, lease_ms=30_000)
    with pytest.raises(LockLost):
        await bus.end_turn("sa", E.reply(first.offset, "x"), first.offset, "w2",
                           ack=claim.ack_command())
    ended = await bus.end_turn("sa", E.reply(first.offset, "1"), first.offset, "w1",
                               ack=claim.ack_command())
    assert (ended.released, ended.acked) == (False, False)  # the second turn is pending
    assert ended.next == await bus.next_turn("sa")  # read by the ending, for the worker
    assert ended.next is not None and ended.next.offset == second.offset
    assert (await bus.redis.xpending(bus.keys.inbound(shard), K.GROUP))["pending"] == pending
    assert (await bus.start_attempt("sa", second.offset, "w1", max_attempts=3)).run
    ended = await bus.end_turn("sa", E.reply(second.offset, "2"), second.offset, "w1",
                               ack=claim.ack_command())
    assert (ended.released, ended.acked, ended.next) == (True, True, None)
    assert (await bus.redis.xpending(bus.keys.inbound(shard), K.GROUP))["pending"] == pending - 1
    assert not await bus.redis.exists(bus.keys.lock("sa"))


async def test_a_node_joining_a_locked_session_is_announced_to_the_workers(bus: Bus) -> None:
    """Issue 13, session 13: OPEN announces a node new to a session whose lock is held
    (``"<session> nodes"`` on the workers' channel), once, and the worker's view of the
    session's nodes is then re-read with its next tick (stale at once), not after
    ``NODES_FRESH_S``; a node already there, or a session nobody holds, is not announced."""
    for node in ("n1", "n2"):
        await bus.heartbeat_node(node)
    await bus.open_session("sn", "ann", "n1")
    await bus.open_session("so", "ann", "n1")
    sub = await bus.submit("sn", "m1", "hi", user="ann")
    assert (await bus.start_attempt("sn", sub.offset, "w1", max_attempts=3,
                                    lease_ms=30_000)).run
    bus._remember_nodes("sn", [b"n1"], time.monotonic())
    assert (await bus._nodes_for_tick(["sn"]))[1] == []  # fresh: no re-read
    async with bus.cancel_feed() as feed:
        await asyncio.sleep(0.2)  # the subscription is in before the opens
        await bus.open_session("so", "ann", "n2")  # nobody holds it: no notice
        await bus.open_session("sn", "ann", "n2")
        await bus.open_session("sn", "ann", "n2")  # already there: no notice
        await bus.cancel("sn", sub.offset)
        got = []
        async with asyncio.timeout(10):
            async for data in feed:
                got.append(data)
                if data != "sn nodes":
                    break
    assert got == ["sn nodes", f"sn {sub.offset}"]
    bus.nodes_changed("sn")
    nodes, stale = await bus._nodes_for_tick(["sn"])
    assert stale == ["sn"] and nodes["sn"] == [b"n1"]  # sent as known, re-read with the tick
    assert sorted(await bus.redis.hkeys(bus.keys.nodes("sn"))) == [b"n1", b"n2"]
