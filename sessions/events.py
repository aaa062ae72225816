"""The session log's event schema (docs/protocol.md §5): every event a session's log holds.

Writers build events here and nowhere else, so the documented types and fields have one home:
the edge and the voice bridge (``user`` through :meth:`sessions.bus.Bus.submit`, ``call``),
the agent workers (``turn_start``, ``state``, ``tool_call``, ``tool_result``, ``handoff``,
``reply``, ``cancelled``, ``turn_error``). Field order is the wire order. Also here: the
two frames that carry a running turn's text and are not log events (``chunk``, ``partial``: no
offset, never in the log).
"""

from __future__ import annotations

from typing import Any

Event = dict[str, Any]

USER = "user"
TURN_START = "turn_start"
TOOL_CALL = "tool_call"
TOOL_RESULT = "tool_result"
STATE = "state"
HANDOFF = "handoff"
REPLY = "reply"
CANCELLED = "cancelled"
TURN_ERROR = "turn_error"
CALL = "call"
APPROVAL_REQUEST = "approval_request"
APPROVAL_RESULT = "approval_result"
CHUNK = "chunk"
PARTIAL = "partial"
TURN_ENDS = frozenset({REPLY, CANCELLED, TURN_ERROR})
"""Every turn ends with exactly one of these."""
STATES = frozenset({"thinking", "tool", "speaking", "listening", "idle"})
TOOL_OUTPUT_MAX = 4_096
"""Characters of a tool's output a ``tool_result`` carries; longer ones are cut
(``truncated: true``)."""


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


def tool_call(turn: int, call_id: str, name: str, arguments: dict[str, Any], agent: str,
              private: bool = False) -> Event:
    """The agent called a tool. A private tool's ``arguments`` stay in the worker."""
    if private:
        return {"type": TOOL_CALL, "turn": turn, "call_id": call_id, "name": name,
                "agent": agent, "private": True}
    return {"type": TOOL_CALL, "turn": turn, "call_id": call_id, "name": name,
            "arguments": arguments, "agent": agent}


def tool_result(turn: int, call_id: str, name: str, output: str, is_error: bool,
                private: bool = False) -> Event:
    """A tool's output, cut to :data:`TOOL_OUTPUT_MAX` characters (a private tool's: left
    out)."""
    if private:
        return {"type": TOOL_RESULT, "turn": turn, "call_id": call_id, "name": name,
                "is_error": is_error, "private": True}
    event = {"type": TOOL_RESULT, "turn": turn, "call_id": call_id, "name": name,
             "output": output[:TOOL_OUTPUT_MAX], "is_error": is_error}
    if len(output) > TOOL_OUTPUT_MAX:
        event["truncated"] = True
    return event


def state(turn: int | None, name: str, agent: str) -> Event:
    """What the agent is doing now (one of :data:`STATES`); ``turn`` None: between turns (a
    voice call listening), left out."""
    if turn is None:
        return {"type": STATE, "state": name, "agent": agent}
    return {"type": STATE, "turn": turn, "state": name, "agent": agent}


def handoff(turn: int, source: str, target: str) -> Event:
    """The run handed the conversation from agent ``source`` to agent ``target``."""
    return {"type": HANDOFF, "turn": turn, "from": source, "to": target}


def reply(turn: int, text: str, agent: str | None = None) -> Event:
    """The turn's whole reply; ``agent`` produced it (the last one after handoffs)."""
    if agent is None:
        return {"type": REPLY, "turn": turn, "text": text}
    return {"type": REPLY, "turn": turn, "text": text, "agent": agent}


def cancelled(turn: int, text: str, agent: str | None = None,
              reason: str | None = None) -> Event:
    """The turn ended without a reply: cancelled (``reason`` absent), or not run because an
    operator held the session (``reason`` ``"takeover"``)."""
    event: Event = {"type": CANCELLED, "turn": turn, "text": text}
    if agent is not None:
        event["agent"] = agent
    if reason is not None:
        event["reason"] = reason
    return event


def turn_error(turn: int, code: str, message: str) -> Event:
    """A turn dead-lettered for good (never retryable)."""
    return {"type": TURN_ERROR, "turn": turn, "code": code, "message": message,
            "retryable": False}


def approval_request(turn: int, call_id: str, name: str, arguments: Any, agent: str,
                     expires: float, private: bool = False) -> Event:
    """The turn waits for a person to approve a tool call until ``expires`` (unix s). A private
    tool's ``arguments`` stay in the worker."""
    if private:
        return {"type": APPROVAL_REQUEST, "turn": turn, "call_id": call_id, "name": name,
                "agent": agent, "expires": expires, "private": True}
    return {"type": APPROVAL_REQUEST, "turn": turn, "call_id": call_id, "name": name,
            "arguments": arguments, "agent": agent, "expires": expires}


def approval_result(turn: int, call_id: str, approved: bool, by: str,
                    message: str | None = None) -> Event:
    """A pending tool call was answered (``by``: the user's ``sub``, or ``"timeout"``)."""
    event: Event = {"type": APPROVAL_RESULT, "turn": turn, "call_id": call_id,
                    "approved": approved, "by": by}
    if message is not None:
        event["message"] = message
    return event


def call(state: str, node: str, ts: float, **fields: Any) -> Event:
    """A voice call of the session changed state (``joined``, ``error``, ``ended``)."""
    return {"type": CALL, "state": state, "node": node, "ts": ts, **fields}


def frame_for(offset: int, event: bytes) -> bytes:
    """The client frame of a log event: the event JSON with its offset spliced in first."""
    return b'{"offset":%d,%s' % (offset, event[1:])


MESSAGE = "message"
MESSAGE_ROLES = frozenset({"operator", "system"})


def message(role: str, text: str, by: str, ts: float) -> Event:
    """A message a backend posted into the session (``POST /v1/sessions/{id}/messages``):
    ``role`` ``operator`` or ``system``, ``by`` the poster's token subject."""
    return {"type": MESSAGE, "role": role, "text": text, "by": by, "ts": ts}


def message_note(role: str, text: str, by: str) -> Event:
    """How the agent sees a posted message in its memory (sessions/memory.py): an input item
    of role ``system`` whose text names who posted it, e.g. ``[operator ops@acme] text``."""
    return {"role": "system", "content": f"[{role} {by}] {text}"}


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


def interim_transcript(text: str, utterance: str) -> Event:
    """The caller's utterance so far, while they speak: an off-log frame, never a log event
    (docs/protocol.md, ``transcript``); ``utterance`` names the utterance it belongs to."""
    return {**transcript(text, False, "user"), "utterance": utterance}


TAKEOVER = "takeover"


def takeover(active: bool, by: str, ts: float) -> Event:
    """An operator took the session over (``active``) or gave it back to the agent; ``by``
    is the operator's token subject."""
    return {"type": TAKEOVER, "active": active, "by": by, "ts": ts}


PRESENCE = "presence"


def presence(devices: int, operator: bool, call: bool, ts: float) -> Event:
    """Who is in the session after a change (``AGENTIA_PRESENCE_EVENTS``): the user's
    connected devices, whether an operator's connection is open and a voice call holds it.
    Written by the ``PRESENCE`` script (sessions/presence_events.py), which builds this same
    object in Lua (``ts`` with 3 decimals)."""
    return {"type": PRESENCE, "devices": devices, "operator": operator, "call": call, "ts": ts}
