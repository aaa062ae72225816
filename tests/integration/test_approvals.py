"""The pause record's scripts (sessions/approvals.py) against a real Redis: a call asked once,
decided once (first answer wins), never after its expiry, its turn's end or its cancel; a new
attempt gets the turn's memory back; attempts count from the last pause."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from agentia.codes import AgentiaError, ErrorCode
from sessions import events as E
from sessions.bus import Bus
from sessions.roles import Request

OWNER = "w1"


async def _paused(bus: Bus, sid: str, expires: float | None = None) -> Request:
    """A session whose turn 1 paused in attempt 1 on one call, with two memory items."""
    await bus.open_session(sid, "ann")
    await bus.submit(sid, "c1", "book", user="ann")
    assert await bus.try_lock(sid, OWNER, 30_000)
    started = await bus.start_attempt(sid, 1, OWNER, max_attempts=1)
    assert started.run
    items: list[Any] = [{"role": "user", "content": "book"},
                        {"type": "function_call", "call_id": "c"}]
    mem = bus.memory(sid, 1, OWNER)
    await mem.add_items(items)
    await mem.save()  # the worker saves its memory before a pause (sessions/worker.py)
    req = Request("c", "book_table", {"people": 2}, "demo", expires or time.time() + 60)
    new = await bus.pause(sid, 1, started.attempt, OWNER, "{}", "so far", [req], [])
    assert new == [req]
    return req


async def _kinds(bus: Bus, sid: str) -> list[str]:
    rows = await bus.redis.xrange(bus.keys.log(sid))
    return [orjson.loads(f[b"e"])["type"] for _, f in rows]


async def test_first_answer_wins_and_a_call_is_asked_once(bus: Bus) -> None:
    req = await _paused(bus, "a1")
    assert await bus.pause("a1", 1, 1, OWNER, "{}", "", [req], []) == []  # asked already
    offset = await bus.approve("a1", "c", False, by="ann", message="no")
    with pytest.raises(AgentiaError) as info:
        await bus.approve("a1", "c", True, by="bob")
    assert info.value.code is ErrorCode.NO_SUCH_APPROVAL
    with pytest.raises(AgentiaError):
        await bus.approve("a1", "other", True, by="ann")
    assert await _kinds(bus, "a1") == ["user", "turn_start", "approval_request",
                                       "approval_result"]
    got = await bus.decisions("a1", 1, ["c"])
    assert got is not None and got["c"].approved is False and got["c"].message == "no"
    rows = await bus.redis.xrange(bus.keys.log("a1"), f"0-{offset}", f"0-{offset}")
    assert orjson.loads(rows[0][1][b"e"]) == E.approval_result(1, "c", False, "ann", "no")


async def test_no_decision_after_expiry_end_or_cancel_but_the_timeout_s(bus: Bus) -> None:
    await _paused(bus, "a2", expires=time.time() - 1)
    with pytest.raises(AgentiaError):
        await bus.approve("a2", "c", True, by="ann")  # expired
    assert await bus.decide("a2", 1, "c", False, "timeout", None, 0) > 0  # the worker's
    await _paused(bus, "a3")
    assert await bus.cancel("a3", 1) == 1
    assert await bus.decide("a3", 1, "c", True, "ann", None, time.time()) == 0
    await _paused(bus, "a4")
    await bus.append("a4", E.reply(1, "done"), done=1, owner=OWNER)
    assert await bus.decide("a4", 1, "c", True, "ann", None, time.time()) == 0


async def test_a_new_attempt_gets_the_memory_and_counts_from_the_pause(bus: Bus) -> None:
    await _paused(bus, "a5")
    await bus.approve("a5", "c", True, by="ann")
    # max_attempts 1: attempt 2 is past it, but attempts count from the pause (attempt 1)
    started = await bus.start_attempt("a5", 1, OWNER, max_attempts=1)
    assert started.attempt == 2 and started.run
    assert await bus.memory("a5", 1, OWNER).get_items() == []  # START removed them
    record = await bus.resume_pause("a5", 1, OWNER)
    assert record is not None and record.text == "so far" and list(record.requests) == ["c"]
    assert record.decisions["c"].approved is True and record.decisions["c"].by == "ann"
    items = await bus.memory("a5", 1, OWNER).get_items()
    assert [i.get("role") or i.get("type") for i in items] == ["user", "function_call"]
    again = await bus.resume_pause("a5", 1, OWNER)  # not twice
    assert again is not None and len(await bus.memory("a5", 1, OWNER).get_items()) == 2
    # without another pause, attempt 3 is one too many
    assert not (await bus.start_attempt("a5", 1, OWNER, max_attempts=1)).run
    assert await bus.resume_pause("a5", 2, OWNER) is None  # another turn: none


async def test_a_record_of_an_earlier_epoch_is_ignored(bus: Bus) -> None:
    await _paused(bus, "a6")
    # the session's meta was lost and the session made anew: its turns count from 1 again
    await bus.redis.hset(bus.keys.meta("a6"), "epoch", "another")
    with pytest.raises(AgentiaError):
        await bus.approve("a6", "c", True, by="ann")
    assert await bus.resume_pause("a6", 1, OWNER) is None
