"""The session log's event schema (docs/protocol.md §5): every event a session's log holds.

Writers build events here and nowhere else, so the documented types and fields have one home:
the edge and the voice bridge (``user`` through :meth:`sessions.bus.Bus.submit`, ``call``),
the agent workers (``turn_start``, ``tool``, ``reply``, ``cancelled``, ``turn_error``). Field
order is the wire order. Also here: the two frames that carry a running turn's text and are not
log events (``chunk``, ``partial``: no offset, never in the log).
"""

from __future__ import annotations

from typing import Any

Event = dict[str, Any]

USER = "user"
TURN_START = "turn_start"
TOOL = "tool"
REPLY = "reply"
CANCELLED = "cancelled"
TURN_ERROR = "turn_error"
CALL = "call"
CHUNK = "chunk"
PARTIAL = "partial"
TURN_ENDS = frozenset({REPLY, CANCELLED, TURN_ERROR})
"""Every turn ends with exactly one of these."""


def user(client_id: str, text: str, source: str, sender: str, ts: float) -> Event:
    """A turn accepted from a client; its offset is the turn id."""
    return {"type": USER, "id": client_id, "text": text, "source": source, "user": sender,
            "ts": ts}


def turn_start(turn: int, attempt: int) -> Event:
    return {"type": TURN_START, "turn": turn, "attempt": attempt}


def chunk(turn: int, attempt: int, seq: int, text: str) -> Event:
    """The next piece of a running turn's reply (not a log event: no offset)."""
    return {"type": CHUNK, "turn": turn, "attempt": attempt, "seq": seq, "text": text}


def partial(turn: int, attempt: int, seq: int, text: str) -> Event:
    """A running turn's chunks 1..``seq`` as one text (not a log event)."""
    return {"type": PARTIAL, "turn": turn, "attempt": attempt, "seq": seq, "text": text}


def tool(turn: int, name: str) -> Event:
    return {"type": TOOL, "turn": turn, "name": name}


def reply(turn: int, text: str) -> Event:
    return {"type": REPLY, "turn": turn, "text": text}


def cancelled(turn: int, text: str) -> Event:
    return {"type": CANCELLED, "turn": turn, "text": text}


def turn_error(turn: int, code: str, message: str) -> Event:
    """A turn dead-lettered for good (never retryable)."""
    return {"type": TURN_ERROR, "turn": turn, "code": code, "message": message,
            "retryable": False}


def call(state: str, node: str, ts: float, **fields: Any) -> Event:
    """A voice call of the session changed state (``joined``, ``error``, ``ended``)."""
    return {"type": CALL, "state": state, "node": node, "ts": ts, **fields}


def frame_for(offset: int, event: bytes) -> bytes:
    """The client frame of a log event: the event JSON with its offset spliced in first."""
    return b'{"offset":%d,%s' % (offset, event[1:])


TRANSCRIPT = "transcript"


def transcript(text: str, final: bool, role: str, turn: int | None = None) -> Event:
    """Speech in a voice call as text: the caller's (``role`` ``"user"``, one final
    transcript an utterance) or the agent's as it is spoken (``"agent"``, a sentence at a
    time, with the ``turn`` whose reply it is when known)."""
    event: Event = {"type": TRANSCRIPT, "text": text, "final": final, "source": "voice",
                    "role": role}
    if turn is not None:
        event["turn"] = turn
    return event
