"""sessions/backend_redis.py against a real Redis (unique prefix per test): a posted message's
way into the log and, at the next attempt, into the agent's memory; deletion fenced against a
worker still running a turn; presence written by an edge and read with dead nodes dropped."""

from __future__ import annotations

import orjson
import pytest

from sessions import events as E
from sessions.backend_redis import Backend, PresenceWriter
from sessions.bus import Bus, Forbidden, LockLost


async def _memory(bus: Bus, sid: str) -> list[bytes]:
    return list(await bus.redis.lrange(bus.keys.memory(sid), 0, -1))


async def test_a_posted_message_enters_memory_at_the_next_attempt(bus: Bus) -> None:
    api = Backend(bus)
    assert await api.post_message("none", "operator", "hi", "ops") is None
    await bus.open_session("s1", "ann")
    sub = await bus.submit("s1", "c1", "hello", user="ann")
    off = await api.post_message("s1", "operator", "refund approved", "ops")
    assert off == sub.offset + 1
    r = await bus.replay("s1", sub.offset, None)
    event = orjson.loads(r.events[0][1])
    assert (event["type"], event["role"], event["text"], event["by"]) == (
        "message", "operator", "refund approved", "ops")
    assert await _memory(bus, "s1") == []  # not before the agent's next turn
    assert await bus.try_lock("s1", "w1", 30_000)
    await bus.start_attempt("s1", sub.offset, "w1", max_attempts=3)
    note = b"n|" + orjson.dumps(E.message_note("operator", "refund approved", "ops"))
    assert await _memory(bus, "s1") == [note]
    mem = bus.memory("s1", sub.offset, "w1")
    await mem.add_items([{"role": "user", "content": "hello"}])
    assert (await mem.get_items())[0] == {"role": "system",
                                          "content": "[operator ops] refund approved"}
    await mem.save()
    # a second attempt rolls back the first one's items, not the note
    await bus.start_attempt("s1", sub.offset, "w1", max_attempts=3)
    assert await _memory(bus, "s1") == [note]


async def test_deletion_fences_a_running_turn_and_tells_the_nodes(bus: Bus) -> None:
    api = Backend(bus)
    await bus.heartbeat_node("n1")
    await bus.open_session("s2", "bo", "n1")
    sub = await bus.submit("s2", "c1", "hello", user="bo")
    assert await bus.try_lock("s2", "w1", 30_000)
    await bus.start_attempt("s2", sub.offset, "w1", max_attempts=3)
    with pytest.raises(Forbidden):
        await api.delete_session("s2", "mallory")
    assert await api.delete_session("s2", "bo") == "bo"
    assert await bus.redis.keys(f"{bus.keys.prefix}:{{s2}}:*") == []
    # the worker's writes fail and recreate nothing
    assert await bus.append("s2", E.reply(sub.offset, "late"), done=sub.offset,
                            owner="w1") == -1
    mem = bus.memory("s2", sub.offset, "w1")
    await mem.add_items([{"role": "user", "content": "x"}])
    with pytest.raises(LockLost):
        await mem.save()
    assert not await bus.end_turn("s2", E.reply(sub.offset, "late"), sub.offset, "w1",
                                  remember=mem.take_unsaved())
    await bus.stream_chunks([("s2", "1:1:ab", 1, b"{}", "late")])
    # a worker claiming the session's shard entry later finds nothing to run, locks nothing
    assert await bus.try_lock("s2", "w2", 30_000)
    assert await bus.next_turn("s2") is None
    assert await bus.release_lock("s2", "w2") == -1
    assert await bus.redis.keys(f"{bus.keys.prefix}:{{s2}}:*") == []
    rows = await bus.read_delivery("n1", b"0-0", 10)
    assert [(d.session, d.notice, d.event) for d in rows if d.notice] == [
        ("s2", "deleted", b"")]
    assert await api.delete_session("s2") is None


async def test_delete_user_finds_sessions_in_both_indexes(bus: Bus) -> None:
    api = Backend(bus)
    for sid in ("u1", "u2", "u3"):
        await bus.open_session(sid, "cy")
    await bus.touch_user_sessions({("cy", "u1"): 1.0, ("cy", "u2"): 2.0})
    await bus.redis.zadd(bus.user_keys.live("cy"), {"u3": 2**31})
    await bus.open_session("x1", "dee")
    await bus.touch_user_sessions({("cy", "x1"): 3.0})  # not cy's: left alone
    assert await api.delete_user("cy") == 3
    for sid in ("u1", "u2", "u3"):
        assert await bus.session_owner(sid) is None
    assert await bus.session_owner("x1") == "dee"
    assert await bus.user_sessions("cy", 10) == []


async def test_presence_lists_devices_of_live_nodes(bus: Bus) -> None:
    api = Backend(bus)
    await bus.open_session("p1", "di")
    assert (await api.presence("p1")).connected == 0
    w1, w2 = PresenceWriter(bus, "e1"), PresenceWriter(bus, "e2")
    a, b, c = object(), object(), object()
    w1.join("p1", a, 10.0, "phone")
    w1.join("p1", c, 11.0, None)
    w1.leave("p1", c)  # joined and left within one batch: never written
    w2.join("p1", b, 12.0, "x" * 500)
    await w1.flush()
    await w2.flush()
    await bus.heartbeat_node("e1")
    p = await api.presence("p1")
    assert (p.connected, [d.user_agent for d in p.devices], p.voice) == (1, ["phone"], False)
    await bus.heartbeat_node("e2")
    p = await api.presence("p1")
    assert p.connected == 1  # e2's entry was dropped while e2 looked dead
    w2.join("p1", b, 12.0, "x" * 500)
    await w2.flush()
    p = await api.presence("p1")
    assert [(d.node, d.since, len(d.user_agent or "")) for d in p.devices] == [
        ("e1", 10.0, 5), ("e2", 12.0, PresenceWriter.MAX_UA)]
    w1.leave("p1", a)
    await w1.flush()
    assert (await api.presence("p1")).connected == 1


async def test_takeover_cancels_a_begun_turn_and_holds_the_next(bus: Bus) -> None:
    api = Backend(bus)
    assert await api.takeover("none", "op", True) is None
    await bus.open_session("t1", "ann")
    first = await bus.submit("t1", "c1", "hello", user="ann")
    second = await bus.submit("t1", "c2", "are you there?", user="ann")
    assert await bus.try_lock("t1", "w1", 30_000)
    assert (await bus.start_attempt("t1", first.offset, "w1", max_attempts=3)).run
    t = await api.takeover("t1", "op", True)
    assert t is not None and t.offset > second.offset
    meta = await bus.redis.hgetall(bus.keys.meta("t1"))
    assert meta[b"op"] == b"op" and meta[f"x:{first.offset}".encode()] == b"1"
    assert f"x:{second.offset}".encode() not in meta  # not begun: START holds it instead
    again = await api.takeover("t1", "op", True)
    assert again is not None and again.offset == 0  # held already: nothing written
    s = await bus.start_attempt("t1", second.offset, "w1", max_attempts=3,
                                said="are you there?")
    assert (s.held, s.cancelled, s.run) == (True, False, "")
    notes = await bus.redis.lrange(bus.keys.notes("t1"), 0, -1)
    assert notes == [orjson.dumps({"role": "user", "content": "are you there?"})]
    back = await api.takeover("t1", "op", False)
    assert back is not None and back.offset == t.offset + 1
    assert b"op" not in await bus.redis.hgetall(bus.keys.meta("t1"))
    r = await bus.replay("t1", t.offset - 1, None)
    kinds = [(e["type"], e.get("active")) for e in (orjson.loads(raw) for _, raw in r.events)]
    assert kinds == [("takeover", True), ("takeover", False)]
