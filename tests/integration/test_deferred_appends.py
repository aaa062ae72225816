"""Appends kept for the session's next tick (sessions/deferred_appends.py, issue 13 session
12): a script cache found empty, a lock another worker took, a new attempt before any tick."""

from __future__ import annotations

import orjson
import pytest

from sessions import events as E
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
