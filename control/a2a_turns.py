"""An A2A task's turn read from its session log (docs/a2a.md "Tasks across replicas"): the
live follow a running task (or a ``tasks/resubscribe`` on any replica) streams from, the
bounded scan that settles a task whose control plane stopped, and the task's terminal form.

The log is the turn's truth on every replica: the turn runs on the bus whichever control plane
took the task, and ends with exactly one of ``reply``, ``cancelled``, ``turn_error``
(:data:`sessions.events.TURN_ENDS`). No state of its own: reads only.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from a2a.helpers.proto_helpers import new_text_part
from a2a.types import Artifact, Message, Role, Task, TaskState, TaskStatus
from google.protobuf.json_format import MessageToDict

from sessions import events as E
from sessions.bus import Bus

POLL_S = 0.1
"""How often a followed turn's log and partial text are read (one XRANGE + one LRANGE)."""
TURN_LIMIT_S = 600.0
"""A task whose turn has not ended after this long is failed (the turn goes on in its
session)."""
PAGE = 200
"""Log events read per XRANGE."""
SCAN_EVENTS = 1_000
"""Log events after a turn read at most, per request, to find its end (:func:`find_end`)."""
ARTIFACT = "reply"
"""The id and name of a task's one artifact: the turn's reply."""
TURN_KEY = "agentia"
"""A working task's status message metadata: ``{"agentia": {"session", "turn"}}``."""


@dataclass(frozen=True, slots=True)
class Step:
    """One poll of a followed turn: new reply text (``""``: none; ``append``: after what was
    sent), or the turn's end event (``end``), or neither (the turn goes on)."""

    text: str = ""
    append: bool = False
    end: dict[str, Any] | None = None


class Gone(Exception):
    """The turn's events are no longer in its session's log (trimmed, deleted, or Redis
    restarted empty)."""


async def follow(bus: Bus, sid: str, turn: int, sent: str = "",
                 limit_s: float = TURN_LIMIT_S) -> AsyncIterator[Step]:
    """A :class:`Step` every :data:`POLL_S` until the turn ends (the last step has ``end``) or
    ``limit_s`` passes (the iterator stops without an end). ``sent``: the reply text the reader
    has already (its chunks continue after it)."""
    after, deadline = turn, time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for offset, raw in (await bus.replay(sid, after, None, PAGE)).events:
            after = offset
            e = orjson.loads(raw)
            if e.get("turn") == turn and e.get("type") in E.TURN_ENDS:
                yield Step(end=e)
                return
        p = await bus.partial(sid)
        if p is not None and p.turn == turn and len(p.text) > len(sent) \
                and p.text.startswith(sent):
            yield Step(p.text[len(sent):], bool(sent))
            sent = p.text
        else:
            yield Step()
        await asyncio.sleep(POLL_S)


async def find_end(bus: Bus, sid: str, turn: int, most: int = SCAN_EVENTS
                   ) -> dict[str, Any] | None:
    """The turn's end event, read from the log (at most ``most`` events after the turn, in
    pages of :data:`PAGE`), or None if it has not ended within them. Raises :class:`Gone`
    when the log no longer holds the turn."""
    after, read = turn, 0
    while read < most:
        want = min(PAGE, most - read)
        page = await bus.replay(sid, after, None, want)
        if not page.recovered:  # a gap after the turn, or the session is not that one now
            raise Gone(sid)
        for offset, raw in page.events:
            after = offset
            e = orjson.loads(raw)
            if e.get("turn") == turn and e.get("type") in E.TURN_ENDS:
                return e  # type: ignore[no-any-return]
        read += len(page.events)
        if len(page.events) < want:
            return None  # the end of the log: the turn goes on
    return None


def said(task: Task, text: str) -> Message:
    """An agent message of the task (as ``TaskUpdater.new_agent_message`` makes one)."""
    return Message(role=Role.ROLE_AGENT, task_id=task.id, context_id=task.context_id,
                   message_id=str(uuid.uuid4()), parts=[new_text_part(text)])


def end_status(task: Task, end: dict[str, Any]) -> tuple[TaskStatus, str | None]:
    """The terminal status a turn's end event gives its task, and the reply text (the whole
    artifact) when it completed it: as :meth:`control.a2a.TurnExecutor.execute` maps them."""
    kind = end.get("type")
    if kind == E.REPLY:
        return status(TaskState.TASK_STATE_COMPLETED), str(end.get("text", ""))
    if kind == E.CANCELLED:
        return status(TaskState.TASK_STATE_CANCELED,
                      said(task, end.get("text", "") or "cancelled")), None
    return status(TaskState.TASK_STATE_FAILED,
                  said(task, f"{end.get('code')}: {end.get('message')}")), None


def status(state: TaskState, message: Message | None = None) -> TaskStatus:
    s = TaskStatus(state=state, message=message)
    s.timestamp.FromDatetime(datetime.now(UTC))
    return s


def settled(task: Task, new: TaskStatus, reply: str | None = None) -> Task:
    """A copy of ``task`` with status ``new`` (the old status message moved to the history, as
    the SDK's task manager moves it) and, with ``reply``, the whole reply as its artifact."""
    done = Task()
    done.CopyFrom(task)
    if done.status.HasField("message"):
        done.history.append(done.status.message)
    done.status.CopyFrom(new)
    if reply is not None:
        kept = [a for a in done.artifacts if a.artifact_id != ARTIFACT]
        del done.artifacts[:]
        done.artifacts.extend([*kept, Artifact(artifact_id=ARTIFACT, name=ARTIFACT,
                                               parts=[new_text_part(reply)])])
    return done


def age_s(task: Task) -> float:
    """Seconds since the task's status was last set (its timestamp; none: infinitely old)."""
    if not task.status.HasField("timestamp"):
        return float("inf")
    return time.time() - task.status.timestamp.ToMilliseconds() / 1000


def running_turn(task: Task) -> tuple[str, int] | None:
    """(session, turn) of a working task, from its status message's metadata (written by
    ``TurnExecutor.execute`` on whichever replica started it)."""
    if task.status.state != TaskState.TASK_STATE_WORKING:
        return None
    meta = MessageToDict(task.status.message.metadata).get(TURN_KEY)
    if not isinstance(meta, dict) or not isinstance(meta.get("session"), str):
        return None
    try:
        return meta["session"], int(meta["turn"])
    except (KeyError, TypeError, ValueError):
        return None


def reply_text(task: Task) -> str:
    """The text of the task's ``reply`` artifact so far (what its chunks added up to)."""
    return "".join(p.text for a in task.artifacts if a.artifact_id == ARTIFACT
                   for p in a.parts)
