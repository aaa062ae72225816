"""Appends kept for the session's next tick (sessions/deferred_appends.py, issue 13 session
12): a script cache found empty, a lock another worker took, a new attempt before any tick;
a turn's ending riding the next tick (session 14): its order, a tick that fails, a cancel."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from agentia.codes import BusUnavailable
from sessions import events as E
from sessions import keys as K
from sessions.bus import Bus
from sessions.roles import LockLost


async def _session(bus: Bus, sid: str, node: str) -> tuple[int, str]:
    await bus.heartbeat_node(node)
    await bus.open_session(sid, "ann", node)
    sub = await bus.submit(sid, "m1", "hi", user="ann")
    await bus.read_delivery(node, b"0-0", 10)  # the nodes of the session are now known
    await bus.redis.set(bus.keys.lock(sid), "w1")
    return sub.offset, f"{sub.offset}:1:ab12"


async def _types(bus: Bus, sid: str, after: int) -> list[str]:
    return [orjson.loads(e)["type"] + "." + orjson.loads(e).get("state", "")
            for _, e in (await bus.replay(sid, after, None)).events]


async def test_a_flushed_script_cache_still_appends_it_in_order(bus: Bus) -> None:
    """Redis lost its scripts (restarted): the tick's EVALSHA is refused, the append is made
    apart after the tick, once, in the log's order."""
    turn, run = await _session(bus, "df1", "nd1")
    speaking = E.state(turn, "speaking", "demo")
    assert await bus.append("df1", [speaking], owner="w1", later=True) == 0
    await bus.redis.script_flush()
    frame = orjson.dumps(E.chunk(turn, 1, 1, "Hel"))
    await bus.stream_chunks([("df1", run, 1, frame, "")])
    assert await _types(bus, "df1", turn) == ["state.speaking"]
    await bus.stream_chunks([("df1", run, 2, frame, "")])  # not sent twice
    await bus.append("df1", [E.state(turn, "idle", "demo")], owner="w1")
    assert await _types(bus, "df1", turn) == ["state.speaking", "state.idle"]


async def test_a_lock_taken_meanwhile_drops_it_and_the_next_append_says_so(bus: Bus) -> None:
    """Another worker took the session before the tick: the kept append is not made, the
    tick's chunks go out, and the turn's next fenced append raises LockLost."""
    turn, run = await _session(bus, "df2", "nd2")
    assert await bus.append("df2", [E.state(turn, "speaking", "demo")], owner="w1",
                            later=True) == 0
    await bus.redis.set(bus.keys.lock("df2"), "w2")
    await bus.stream_chunks([("df2", run, 1, orjson.dumps(E.chunk(turn, 1, 1, "x")), "")])
    assert await _types(bus, "df2", turn) == []
    with pytest.raises(LockLost):
        await bus.append("df2", [E.state(turn, "idle", "demo")], owner="w1")


async def test_a_new_attempt_sends_the_kept_append_first(bus: Bus) -> None:
    """An attempt that failed before its first tick: the next attempt's START makes the kept
    append first, so the log keeps the order the worker wrote in."""
    turn, _run = await _session(bus, "df3", "nd3")
    await bus.append("df3", [E.state(turn, "speaking", "demo")], owner="w1", later=True)
    started = await bus.start_attempt("df3", turn, "w1", max_attempts=3)
    assert started.run
    assert (await _types(bus, "df3", turn))[:2] == ["state.speaking", "turn_start."]


# A turn's ending riding the worker's next tick (issue 13, session 14: sessions/worker.py's
# ``_finish``, the flusher's ``carry``): after the tick's text, in its pipeline.


def _ending(turn: int, text: str) -> list[E.Event]:
    return [E.state(turn, "idle", "demo"), E.reply(turn, text, "demo")]


async def test_an_ending_waits_for_the_tick_and_comes_after_its_text(bus: Bus) -> None:
    """Handed over, the ending is not sent until the next tick; that tick's node entry
    holds the text, then the ending's events, in this order; the lock is freed (nothing
    pending) and the partial buffer dropped, as by an ending sent apart."""
    turn, run = await _session(bus, "df7", "nd7")
    await bus.append("df7", E.turn_start(turn, 1), owner="w1", run=run)
    assert bus.rides_tick("df7")
    ending = asyncio.create_task(bus.end_turn("df7", _ending(turn, "Hel"), turn, "w1",
                                              tick=True))
    await asyncio.sleep(0.05)
    assert not ending.done() and await _types(bus, "df7", turn) == ["turn_start."]
    frame = orjson.dumps(E.chunk(turn, 1, 1, "Hel"))
    await bus.stream_chunks([("df7", run, 1, frame, "")])
    ended = await asyncio.wait_for(ending, 5)
    assert ended.released and not await bus.redis.exists(bus.keys.lock("df7"))
    assert await _types(bus, "df7", turn) == ["turn_start.", "state.idle", "reply."]
    rows = [r for r in await bus.read_delivery("nd7", b"0-0", 10) if r.session == "df7"]
    kinds = ["chunk" if r.chunk else orjson.loads(r.event)["type"] for r in rows]
    assert kinds[-3:] == ["chunk", "state", "reply"], kinds
    assert not await bus.redis.exists(bus.keys.partial("df7"))


async def test_a_tick_that_fails_fails_the_ending_and_keeps_nothing(
        bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tick fails before its pipeline (Redis unreachable): the ending's waiter gets the
    outage (BusUnavailable, as an ending sent apart), nothing is written, nothing is left
    waiting; the same ending sent again is written once."""
    turn, _run = await _session(bus, "df8", "nd8")

    async def down(*_: object) -> None:
        raise ConnectionError("Redis went away")

    ending = asyncio.create_task(bus.end_turn("df8", _ending(turn, ""), turn, "w1", tick=True))
    await asyncio.sleep(0)
    with monkeypatch.context() as m:
        m.setattr(bus, "_nodes_for_tick", down)
        with pytest.raises(BusUnavailable):
            await bus.stream_chunks([])
    with pytest.raises(BusUnavailable):
        await asyncio.wait_for(ending, 5)
    assert not bus._endings and await _types(bus, "df8", turn) == []
    assert (await bus.end_turn("df8", _ending(turn, ""), turn, "w1")).released
    assert await _types(bus, "df8", turn) == ["state.idle", "reply."]


async def test_an_ending_cancelled_before_its_tick_is_not_sent(bus: Bus) -> None:
    """A worker stopping (its turn cancelled) while the ending waits: the ending is taken
    back, the next tick does not write it."""
    turn, run = await _session(bus, "df9", "nd9")
    ending = asyncio.create_task(bus.end_turn("df9", _ending(turn, ""), turn, "w1", tick=True))
    await asyncio.sleep(0)
    ending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ending
    await bus.stream_chunks([("df9", run, 1, orjson.dumps(E.chunk(turn, 1, 1, "x")), "")])
    assert not bus._endings and await _types(bus, "df9", turn) == []


async def test_a_flushed_script_cache_keeps_speaking_before_the_ending(bus: Bus) -> None:
    """Redis lost its scripts with ``speaking`` kept and the ending waiting in one tick: both
    are refused, then made apart in the log's order (``speaking``, then the ending)."""
    turn, run = await _session(bus, "dfa", "nda")
    assert await bus.append("dfa", [E.state(turn, "speaking", "demo")], owner="w1",
                            later=True) == 0
    ending = asyncio.create_task(bus.end_turn("dfa", _ending(turn, "Hi"), turn, "w1",
                                              tick=True))
    await asyncio.sleep(0)
    await bus.redis.script_flush()
    await bus.stream_chunks([("dfa", run, 1, orjson.dumps(E.chunk(turn, 1, 1, "Hi")), "")])
    assert (await asyncio.wait_for(ending, 5)).released
    assert await _types(bus, "dfa", turn) == ["state.speaking", "state.idle", "reply."]


async def test_a_stale_sessions_nodes_are_read_from_its_hkeys_not_an_endings_reply(
        bus: Bus) -> None:
    """A tick that re-reads a stale session's nodes (``HKEYS``, for the next tick) and carries
    an ending: the endings are queued after the ``HKEYS``, so the nodes are its replies, not
    the endings' (until session 15 the last replies were taken: the ending script's answer,
    integers among them, became the session's nodes and every later tick of the worker failed
    on them with AttributeError: bench_worker's 1,000 long streams, ~300 turns failed)."""
    await bus.preload_scripts()  # as a worker does: the ending runs in the tick
    turn_b, run_b = await _session(bus, "dfb", "ndb")
    turn_c, run_c = await _session(bus, "dfc", "ndc")
    await bus.stream_chunks([("dfb", run_b, 1, orjson.dumps(E.chunk(turn_b, 1, 1, "a")), "a")])
    seen, nodes = bus._session_nodes["dfb"]
    bus._session_nodes["dfb"] = (seen - K.NODES_FRESH_S - 1, nodes)  # stale: re-read this tick
    ending = asyncio.create_task(bus.end_turn("dfc", _ending(turn_c, "Hi"), turn_c, "w1",
                                              tick=True))
    await asyncio.sleep(0)
    await bus.stream_chunks([("dfb", run_b, 2, orjson.dumps(E.chunk(turn_b, 1, 2, "b")), "b"),
                             ("dfc", run_c, 1, orjson.dumps(E.chunk(turn_c, 1, 1, "Hi")), "")])
    assert (await asyncio.wait_for(ending, 5)).released
    assert bus._session_nodes["dfb"][1] == [b"ndb"]
    await bus.stream_chunks([("dfb", run_b, 3, orjson.dumps(E.chunk(turn_b, 1, 3, "c")), "c")])
    rows = [r for r in await bus.read_delivery("ndb", b"0-0", 50) if r.session == "dfb"]
    assert len([r for r in rows if r.chunk]) == 3
