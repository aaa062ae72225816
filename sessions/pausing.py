"""A worker's paused turn: waiting for people's decisions on tool calls, and applying them.

The record and its scripts are ``sessions/approvals.py``; this is the worker's side, which
needs the Agents SDK: the requests of a paused run, the wait (notices from the edges on the
cancel channel, a re-read every :data:`~sessions.approvals.APPROVAL_RECHECK_S`, the timeout
that rejects), and the decisions applied to the run's ``RunState`` before it goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from agents import Agent, RunState
from agents.tool import DEFAULT_APPROVAL_REJECTION_MESSAGE

from sessions.approvals import APPROVAL_RECHECK_S
from sessions.duties import Running
from sessions.roles import Approvals, Decision, PauseRecord, Request, Turn

if TYPE_CHECKING:
    from sessions.runtime import Paused

log = logging.getLogger("agentia.worker")

TIMEOUT_BY = "timeout"
"""``approval_result.by`` of a request nobody answered in time."""


class PauseClosed(Exception):
    """A request can no longer be decided, yet has no decision: its turn was cancelled (the
    cancel notice was lost) or ended elsewhere."""


def call_id_of(item: Any) -> str:
    raw = item.raw_item
    value = raw.get("call_id") if isinstance(raw, dict) else getattr(raw, "call_id", None)
    return str(value or "")


def rejection(d: Decision) -> str | None:
    """What the model is told of a rejection (None: the SDK's default text). It starts with
    the SDK's default text, so that tools and models may recognise it."""
    if d.by == TIMEOUT_BY:
        return f"{DEFAULT_APPROVAL_REJECTION_MESSAGE} Nobody answered in time."
    if d.message:
        return f"{DEFAULT_APPROVAL_REJECTION_MESSAGE} The person said: {d.message}"
    return None


def apply(state: RunState[Any], decisions: dict[str, Decision]) -> None:
    """Approve or reject each call the run waits for (every one must have a decision)."""
    for item in state.get_interruptions():
        d = decisions[call_id_of(item)]
        if d.approved:
            state.approve(item)
        else:
            state.reject(item, rejection_message=rejection(d))


async def restore(agent: Agent[Any], text: str) -> RunState[Any]:
    """A paused run's state as the pause record keeps it (``RunState.to_string``)."""
    return await RunState.from_string(agent, text)


def pending_ids(state: RunState[Any]) -> list[str]:
    return [call_id_of(i) for i in state.get_interruptions()]


async def wait_for_decisions(bus: Approvals, sid: str, run: Running,
                             requests: list[Request]) -> dict[str, Decision]:
    """Wait until every request has a decision: a person's (any edge: a notice sets
    ``run.decided``, and the record is re-read every ``APPROVAL_RECHECK_S`` in case the
    notice was lost), or the timeout's rejection, written here when a request expires. The
    decisions are read from the record, never from the notices."""
    turn = run.turn
    waiting = {r.call_id: r for r in requests}
    got: dict[str, Decision] = {}
    decided = run.decided = run.decided or asyncio.Event()
    while waiting:
        if run.cancelled_by_user:  # its cancel may have met an await that swallowed it
            raise asyncio.CancelledError()
        decided.clear()  # before the read: a notice that comes after it wakes the wait
        found = await bus.decisions(sid, turn, list(waiting))
        if found is None:
            raise PauseClosed(f"the pause record of turn {turn} is gone")
        for cid, d in found.items():
            got[cid] = d
            del waiting[cid]
        now = time.time()
        expired = [r for r in waiting.values() if r.expires <= now]
        for r in expired:
            if not await bus.decide(sid, turn, r.call_id, False, TIMEOUT_BY, None, 0):
                await _closed_unless_decided(bus, sid, turn, r.call_id)
        if waiting and not expired:
            wake = min(APPROVAL_RECHECK_S, min(r.expires for r in waiting.values()) - now)
            with suppress(TimeoutError):
                await asyncio.wait_for(decided.wait(), max(0.0, wake))
    return got


async def _closed_unless_decided(bus: Approvals, sid: str, turn: int, call_id: str) -> None:
    """The timeout's decision was refused: a person's came first (read again next round),
    or the turn is over (cancelled)."""
    found = await bus.decisions(sid, turn, [call_id])
    if not found:
        raise PauseClosed(f"turn {turn} can no longer be decided (cancelled?)")


async def pause_and_wait(bus: Approvals, agent: Agent[Any], owner: str, turn: Turn, text: str,
                         run: Running, paused: Paused, timeout_s: float,
                         extras: list[dict[str, Any]], private: frozenset[str] = frozenset()
                         ) -> RunState[Any]:
    """The run waits for people to approve tool calls: record the pause (state, reply text so
    far, requests and their ``approval_request`` events, then ``extras`` (the ``state``), in
    one script), wait for every
    decision, and return the state to go on with, decisions applied. The state is restored
    from the recorded text, as a new attempt would: one path for both."""
    state = paused.state.to_string()
    expires = round(time.time() + timeout_s, 3)
    requests = [Request(a.call_id, a.name, a.arguments, a.agent, expires, a.name in private)
                for a in paused.requests]
    run.paused = True
    await bus.pause(turn.session, turn.offset, run.attempt, owner, state, text, requests,
                    extras)
    decisions = await wait_for_decisions(bus, turn.session, run, requests)
    resumed = await restore(agent, state)
    apply(resumed, decisions)
    return resumed


async def resume(bus: Approvals, turn: Turn, run: Running, record: PauseRecord,
                 state: RunState[Any], before_wait: Callable[[], Awaitable[None]]
                 ) -> RunState[Any]:
    """An earlier attempt paused (its worker died, or Redis failed): go on from the recorded
    ``state`` (restored), waiting for the decisions still missing (attempts count from here
    again; ``before_wait`` first, to say so in the log)."""
    ids = pending_ids(state)
    missing = [record.requests[c] for c in ids if c not in record.decisions]
    decisions = {c: d for c, d in record.decisions.items() if c in ids}
    if missing:
        await bus.mark_waiting(turn.session, turn.offset, run.attempt)
        await before_wait()
        decisions.update(await wait_for_decisions(bus, turn.session, run, missing))
    log.info("turn %s/%s goes on from its pause", turn.session, turn.offset)
    apply(state, decisions)
    return state
