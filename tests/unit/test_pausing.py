"""The worker's side of a pause (sessions/pausing.py, sessions/duties.py) against a fake record:
notices wake the wait, the record decides, an expired request is rejected by the timeout, a
cancel ends the wait even when its task cancellation was lost."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from sessions import pausing
from sessions.duties import Running, on_cancel
from sessions.roles import Decision, Request


class FakeRecord:
    """The pause record's decisions, in memory (first decision wins, like DECIDE)."""

    def __init__(self) -> None:
        self.decided: dict[str, Decision] = {}
        self.reads = 0
        self.closed = False

    async def decisions(self, sid: str, turn: int, call_ids: list[str]) -> dict[str, Any] | None:
        self.reads += 1
        return {c: d for c, d in self.decided.items() if c in call_ids}

    async def decide(self, sid: str, turn: int, call_id: str, approved: bool, by: str,
                     message: str | None, now: float) -> int:
        if self.closed or call_id in self.decided:
            return 0
        self.decided[call_id] = Decision(approved, by, message)
        return 1


def _req(call_id: str, in_s: float) -> Request:
    return Request(call_id, "book_table", {}, "demo", time.time() + in_s)


async def test_a_notice_wakes_the_wait_and_the_record_decides() -> None:
    rec, run = FakeRecord(), Running(turn=7)
    waiting = asyncio.create_task(pausing.wait_for_decisions(rec, "s", run,  # type: ignore[arg-type]
                                                             [_req("a", 60)]))
    await asyncio.sleep(0.05)
    rec.decided["a"] = Decision(True, "ann", None)
    on_cancel({"s": run}, "s 7 approval")  # the edge's notice
    got = await asyncio.wait_for(waiting, 2)
    assert got == {"a": Decision(True, "ann", None)} and not run.cancelled_by_user
    on_cancel({"s": run}, "s 8 approval")  # another turn's: ignored
    assert not run.cancelled_by_user


async def test_an_expired_request_is_rejected_by_the_timeout() -> None:
    rec, run = FakeRecord(), Running(turn=7)
    got = await asyncio.wait_for(pausing.wait_for_decisions(
        rec, "s", run, [_req("a", 0.1), _req("b", -1)]), 2)  # type: ignore[arg-type]
    assert got == {"a": Decision(False, "timeout", None), "b": Decision(False, "timeout", None)}


async def test_a_closed_pause_ends_the_wait() -> None:
    rec, run = FakeRecord(), Running(turn=7)
    rec.closed = True  # cancelled: the timeout's decision is refused
    with pytest.raises(pausing.PauseClosed):
        await asyncio.wait_for(pausing.wait_for_decisions(
            rec, "s", run, [_req("a", -1)]), 2)  # type: ignore[arg-type]


async def test_a_cancel_ends_the_wait_even_if_its_cancellation_was_swallowed() -> None:
    rec, run = FakeRecord(), Running(turn=7)
    waiting = asyncio.create_task(pausing.wait_for_decisions(rec, "s", run,  # type: ignore[arg-type]
                                                             [_req("a", 60)]))
    await asyncio.sleep(0.05)
    run.cancelled_by_user = True  # as on_cancel does, without the task's cancel
    assert run.decided is not None
    run.decided.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 2)


def test_rejections_start_with_the_sdk_text() -> None:
    assert pausing.rejection(Decision(False, "ann", None)) is None
    assert pausing.rejection(Decision(False, "ann", "no")) == (
        "Tool execution was not approved. The person said: no")
    assert pausing.rejection(Decision(False, "timeout", None)) == (
        "Tool execution was not approved. Nobody answered in time.")
