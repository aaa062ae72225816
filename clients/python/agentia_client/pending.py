"""What the client waits for: requests written one at a time, and asks following a turn.

No I/O: a :class:`_Request` is made from the caller's arguments (checked as the edge would,
:func:`_send_request`, :func:`_cancel_request`, :func:`_approve_request`), builds its frame
and recognises its answer; a :class:`_Waiter` turns a turn's events and ``chunk``/``partial``
frames into the outcome of :meth:`AgentiaClient.ask` (and hands them to
:meth:`AgentiaClient.stream`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from agentia_client.errors import RequestError, TurnCancelled, TurnFailed
from agentia_client.replies import TurnText
from agentia_client.values import MAX_CLIENT_ID, Event, Limits

_WITH_ID = frozenset({"send", "approve"})
"""Requests answered by an ``ack`` carrying their ``id`` (and errors with it as ``ref``)."""
MAX_APPROVE_MESSAGE = 1000
"""Characters of an ``approve`` frame's ``message`` the edge accepts."""


@dataclass(eq=False, slots=True)
class _Request:
    """A ``send``, ``cancel``, ``approve`` or ``resume`` on its way (``future`` is None for a
    resume the client builds itself)."""

    kind: Literal["send", "cancel", "approve", "resume"]
    future: asyncio.Future[Any] | None = None
    id: str = ""
    text: str = ""
    turn: int | None = None
    after: int = 0
    epoch: str | None = None
    transmissions: int = 0
    generation: int = 0
    call_id: str = ""
    approved: bool = False
    message: str | None = None

    def frame(self) -> dict[str, Any]:
        if self.kind == "send":
            return {"type": "send", "id": self.id, "text": self.text}
        if self.kind == "cancel":
            return {"type": "cancel", "turn": self.turn}
        if self.kind == "approve":
            frame = {"type": "approve", "id": self.id, "call_id": self.call_id,
                     "approved": self.approved}
            return frame if self.message is None else {**frame, "message": self.message}
        return {"type": "resume", "after": self.after, "epoch": self.epoch}

    @property
    def abandoned(self) -> bool:
        return self.future is not None and self.future.done()

    def answered_by(self, frame: dict[str, Any]) -> bool:
        """True when ``frame`` (an ``ack``, ``cancelling`` or ``error``) answers this request."""
        kind = frame.get("type")
        if kind == "ack":
            return self.kind in _WITH_ID and frame.get("id") == self.id
        if kind == "cancelling":
            return self.kind == "cancel"
        if kind == "error":
            ref = frame.get("ref")
            return ref is None or (self.kind in _WITH_ID and ref == self.id)
        return False

    def check_size(self, limits: Limits) -> None:
        """Refuse locally (:class:`RequestError` ``bad_frame``) what the edge would refuse."""
        if len(self.text) > limits.max_text_chars:
            raise RequestError("bad_frame", f"text is longer than {limits.max_text_chars} "
                               "characters", ref=self.id)
        if len(orjson.dumps(self.frame())) > limits.max_frame_bytes:
            raise RequestError("bad_frame", f"the frame is larger than "
                               f"{limits.max_frame_bytes} bytes", ref=self.id)


@dataclass(eq=False, slots=True)
class _Waiter:
    """One :meth:`AgentiaClient.ask`: follows its turn's events to the outcome."""

    client_id: str
    future: asyncio.Future[str]
    on_text: Callable[[str], None] | None
    turn: int | None = None
    reply: TurnText = field(default_factory=lambda: TurnText(0))
    bound_epoch: str | None = None
    on_event: Callable[[Event], None] | None = None
    """Called with each event of the turn, its ``user`` event included, and each of its
    ``chunk``/``partial`` frames that changes the text (used by :meth:`AgentiaClient.stream`)."""

    @property
    def text(self) -> str:
        return self.reply.text

    def restart(self) -> None:
        """The view is rebuilt from the log (a reset): the text comes again."""
        self.reply = TurnText(self.turn or 0)

    def feed(self, ev: Event) -> bool:
        """Apply one log event of the turn; True when the turn is over."""
        if self.on_event is not None and not self.future.done():
            self.on_event(ev)
        kind = ev.get("type")
        if kind == "turn_start":
            self._apply_text(ev)  # a new attempt (or a re-run) restarts the reply
        elif kind == "reply":
            self.reply.apply(ev)
            _resolve(self.future, self.reply.text)
            return True
        elif kind == "cancelled":
            self.reply.apply(ev)
            _fail(self.future, TurnCancelled(self.turn or 0, self.reply.text))
            return True
        elif kind == "turn_error":
            self.reply.apply(ev)
            _fail(self.future, TurnFailed(self.turn or 0, str(ev.get("code", "turn_failed")),
                                          str(ev.get("message", ""))))
            return True
        return self.future.done()

    def feed_stream(self, frame: Event) -> None:
        """Apply a ``chunk`` or ``partial`` frame of the turn (duplicates, holes, stale
        attempts and frames after the end are dropped here, not handed on)."""
        if self._apply_text(frame) and self.on_event is not None and not self.future.done():
            self.on_event(frame)

    def _apply_text(self, frame: Event) -> bool:
        before = self.reply.text
        applied = self.reply.apply(frame)
        if self.reply.text != before and self.on_text is not None and not self.future.done():
            try:
                self.on_text(self.reply.text)
            except Exception as exc:  # the caller's callback: fail its ask, not the client
                _fail(self.future, exc)
        return applied


def _send_request(text: str, id: str | None, limits: Limits | None) -> _Request:
    """A ``send`` from :meth:`AgentiaClient.send`'s arguments, refused here what the edge
    would refuse (ValueError; :class:`RequestError` ``bad_frame`` over ``limits``, the edge's
    when connected)."""
    if not text.strip():
        raise ValueError("text must not be empty or only whitespace")
    req = _Request("send", id=_client_id(id), text=text)
    if limits is not None:
        req.check_size(limits)
    return req


def _cancel_request(turn: int | None) -> _Request:
    if turn is not None and turn < 1:
        raise ValueError("turn must be >= 1")
    return _Request("cancel", turn=turn)


def _approve_request(call_id: str, approved: bool, message: str | None,
                     id: str | None) -> _Request:
    """An ``approve`` from :meth:`AgentiaClient.approve`'s arguments, checked."""
    if not isinstance(call_id, str) or not call_id:
        raise ValueError("call_id must be a non-empty string")
    if not isinstance(approved, bool):
        raise ValueError("approved must be True or False")
    if message is not None and len(message) > MAX_APPROVE_MESSAGE:
        raise RequestError("bad_frame", f"message is longer than {MAX_APPROVE_MESSAGE} "
                           "characters")
    return _Request("approve", id=_client_id(id), call_id=call_id, approved=approved,
                    message=message)


def _client_id(given: str | None) -> str:
    """A request's ``id``: the caller's, checked, or a new random one."""
    cid = given if given is not None else uuid.uuid4().hex
    if not 1 <= len(cid) <= MAX_CLIENT_ID:
        raise ValueError(f"id must be 1-{MAX_CLIENT_ID} characters")
    return cid


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
        fut.exception()  # retrieved: no "never retrieved" warning if nobody awaits it
