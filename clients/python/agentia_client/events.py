"""Typed classes for every frame an edge sends (docs/protocol.md, sections 4 and 5).

:func:`parse_frame` turns a decoded JSON object into one of them: the six control frames
(:class:`Welcome`, :class:`Ack`, :class:`Resumed`, :class:`Cancelling`, :class:`Pong`,
:class:`ErrorFrame`), a running turn's reply text (:class:`Chunk`, :class:`Partial`: no
offset, not log events) or a session log event (:class:`UserMessage`, :class:`TurnStart`,
:class:`ToolCall`, :class:`ToolResult`, :class:`AgentState`, :class:`Handoff`,
:class:`ApprovalRequest`, :class:`ApprovalResult`, :class:`Reply`, :class:`Cancelled`,
:class:`TurnFailure`, :class:`CallState`, :class:`Transcript`; the agent's own events are in
agentia_client/agent_events.py, what backends and operators post in
agentia_client/backend_events.py). A type this version does not know becomes
:class:`UnknownEvent`, and a missing or mistyped field its default, so a newer edge never
breaks an older client. Every instance keeps the object it was parsed from in ``raw``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from agentia_client.agent_events import (
    AgentState,
    ApprovalRequest,
    ApprovalResult,
    Handoff,
    ToolCall,
    ToolResult,
)
from agentia_client.backend_events import PostedMessage, Presence, Takeover
from agentia_client.fields import _float, _int, _opt_str, _str
from agentia_client.values import Ack, Limits

# ------------------------------------------------------------ control frames (section 4)

@dataclass(frozen=True, slots=True)
class Welcome:
    """First frame of every connection."""

    type: ClassVar[str] = "welcome"
    protocol: str
    node: str
    session: str
    epoch: str
    offset: int
    """The session's last offset at connect time."""
    limits: Limits
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    agent: str = ""
    """The agent the session talks to ("" from an edge before issue 14, or for a session
    created while no agent was registered)."""

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Welcome:
        agent = d.get("agent")
        return cls(_str(d, "protocol"), _str(d, "node"), _str(d, "session"),
                   _str(d, "epoch"), _int(d, "offset"), Limits.from_welcome(d.get("limits")),
                   d, agent if isinstance(agent, str) else "")


@dataclass(frozen=True, slots=True)
class Resumed:
    """Ends the answer to a ``resume`` (``solicited``), or says unrequested that the session
    was re-opened with a new epoch."""

    type: ClassVar[str] = "resumed"
    recovered: bool
    offset: int
    epoch: str
    solicited: bool
    id: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Resumed:
        return cls(d.get("recovered") is True, _int(d, "offset"), _str(d, "epoch"),
                   d.get("solicited") is True, _opt_str(d, "id"), d)


@dataclass(frozen=True, slots=True)
class Cancelling:
    """Answer to ``cancel``: the cancel of ``turn`` is recorded."""

    type: ClassVar[str] = "cancelling"
    turn: int
    id: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Cancelling:
        return cls(_int(d, "turn"), _opt_str(d, "id"), d)


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to ``ping``, carrying its ``data``."""

    type: ClassVar[str] = "pong"
    data: Any
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Pong:
        return cls(d.get("data"), d)


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """A frame was refused or a request failed (``code``: docs/protocol.md, section 7)."""

    type: ClassVar[str] = "error"
    code: str
    message: str
    retryable: bool
    ref: str | None
    retry_after_ms: int | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> ErrorFrame:
        ms = d.get("retry_after_ms")
        return cls(_str(d, "code", "unknown"), _str(d, "message"), d.get("retryable") is True,
                   _opt_str(d, "ref"),
                   ms if isinstance(ms, int) and not isinstance(ms, bool) else None, d)


def _parse_ack(d: dict[str, Any]) -> Ack:
    return Ack(_str(d, "id"), _int(d, "offset"), d.get("duplicate") is True)


# ------------------------------------------------------------ reply text as it streams (section 4)

@dataclass(frozen=True, slots=True)
class Chunk:
    """``chunk``: the next piece of a running turn's reply text (no offset, never replayed).

    Apply it when ``seq`` is the number of chunks applied to this run of ``attempt`` + 1
    (:class:`agentia_client.TurnText` does so)."""

    type: ClassVar[str] = "chunk"
    turn: int
    attempt: int
    seq: int
    """1, 2, 3, ... within one run of the attempt."""
    text: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Chunk:
        return cls(_int(d, "turn"), _int(d, "attempt", 1), _int(d, "seq"), _str(d, "text"), d)


@dataclass(frozen=True, slots=True)
class Partial:
    """``partial``: a running turn's text so far (chunks ``1 .. seq`` of the run): replace
    the turn's text with it. Sent in a resume's answer and to a connection that joined
    mid-turn."""

    type: ClassVar[str] = "partial"
    turn: int
    attempt: int
    seq: int
    """The number of chunks ``text`` holds: the next chunk has ``seq + 1``."""
    text: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Partial:
        return cls(_int(d, "turn"), _int(d, "attempt", 1), _int(d, "seq"), _str(d, "text"), d)


# ------------------------------------------------------------ session log events (section 5)

@dataclass(frozen=True, slots=True)
class UserMessage:
    """``user``: a ``send`` was accepted; its ``offset`` is the turn id."""

    type: ClassVar[str] = "user"
    offset: int
    id: str
    text: str
    source: str
    user: str
    ts: float
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def turn(self) -> int:
        return self.offset

    @classmethod
    def parse(cls, d: dict[str, Any]) -> UserMessage:
        return cls(_int(d, "offset"), _str(d, "id"), _str(d, "text"), _str(d, "source"),
                   _str(d, "user"), _float(d, "ts"), d)


@dataclass(frozen=True, slots=True)
class TurnStart:
    """``turn_start``: an attempt began; ``attempt > 1`` restarts the reply from scratch."""

    type: ClassVar[str] = "turn_start"
    offset: int
    turn: int
    attempt: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> TurnStart:
        return cls(_int(d, "offset"), _int(d, "turn"), _int(d, "attempt", 1), d)


@dataclass(frozen=True, slots=True)
class Reply:
    """``reply``: the turn finished; ``text`` is the whole reply of its last attempt."""

    type: ClassVar[str] = "reply"
    offset: int
    turn: int
    text: str
    agent: str | None = None
    """The agent that produced the text (the last one after handoffs)."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Reply:
        return cls(_int(d, "offset"), _int(d, "turn"), _str(d, "text"), _opt_str(d, "agent"), d)


@dataclass(frozen=True, slots=True)
class Cancelled:
    """``cancelled``: the turn was cancelled; ``text`` is what it had produced."""

    type: ClassVar[str] = "cancelled"
    offset: int
    turn: int
    text: str
    agent: str | None = None
    """The agent that produced the text (the last one after handoffs)."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Cancelled:
        return cls(_int(d, "offset"), _int(d, "turn"), _str(d, "text"), _opt_str(d, "agent"),
                   d)


@dataclass(frozen=True, slots=True)
class TurnFailure:
    """``turn_error``: the turn failed for good (``code``: ``turn_failed``, ``turn_timeout``
    or ``guardrail``); it has no final text."""

    type: ClassVar[str] = "turn_error"
    offset: int
    turn: int
    code: str
    message: str
    retryable: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> TurnFailure:
        return cls(_int(d, "offset"), _int(d, "turn"), _str(d, "code", "turn_failed"),
                   _str(d, "message"), d.get("retryable") is True, d)


@dataclass(frozen=True, slots=True)
class CallState:
    """``call``: a voice call of the session changed ``state`` (``joined``, ``error``,
    ``ended``); not part of any turn. ``room`` when joined, ``code``/``message`` on error,
    ``reason`` when ended."""

    type: ClassVar[str] = "call"
    offset: int
    state: str
    node: str
    ts: float
    room: str | None
    code: str | None
    message: str | None
    reason: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> CallState:
        return cls(_int(d, "offset"), _str(d, "state"), _str(d, "node"), _float(d, "ts"),
                   _opt_str(d, "room"), _opt_str(d, "code"), _opt_str(d, "message"),
                   _opt_str(d, "reason"), d)


@dataclass(frozen=True, slots=True)
class Transcript:
    """``transcript``: speech in a voice call as text: the caller's (``role`` ``"user"``) or
    the agent's as it is spoken (``"agent"``, with the ``turn`` whose reply it is when
    known). ``final`` false: an interim one, the caller's ``utterance`` so far (no offset:
    ``offset`` is 0, never replayed); show it as a live caption that the next interim, or
    the caller's next final transcript, replaces (docs/protocol.md)."""

    type: ClassVar[str] = "transcript"
    offset: int
    text: str
    final: bool
    source: str
    role: str
    turn: int | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    utterance: str = ""
    """An interim one's utterance ("" for a final one)."""

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Transcript:
        turn = d.get("turn")
        return cls(_int(d, "offset"), _str(d, "text"), d.get("final") is True,
                   _str(d, "source", "voice"), _str(d, "role"),
                   turn if isinstance(turn, int) and not isinstance(turn, bool) else None, d,
                   _str(d, "utterance"))


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """A frame type this client version does not know (a newer edge): kept as is."""

    type: str
    offset: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


AgentEvent: TypeAlias = (ToolCall | ToolResult | AgentState | Handoff | ApprovalRequest
                         | ApprovalResult)
"""What the agent does within a turn: tools, state, handoffs, approvals."""
LogEvent: TypeAlias = (UserMessage | TurnStart | AgentEvent | Reply | Cancelled | TurnFailure
                       | CallState | PostedMessage | Takeover | Presence | Transcript
                       | UnknownEvent)
"""A session log event (it has an ``offset``)."""
StreamFrame: TypeAlias = Chunk | Partial | Transcript
"""A running turn's reply text, or an interim :class:`Transcript`: not a log event (no
``offset``)."""
TurnEvent: TypeAlias = (UserMessage | TurnStart | AgentEvent | Chunk | Partial | Reply
                        | Cancelled | TurnFailure)
"""What :meth:`AgentiaClient.stream` yields: the events and streamed text of one turn."""
TurnEnd: TypeAlias = Reply | Cancelled | TurnFailure
"""The three events that end a turn; every turn ends with exactly one of them."""
ControlFrame: TypeAlias = Welcome | Ack | Resumed | Cancelling | Pong | ErrorFrame
ServerFrame: TypeAlias = ControlFrame | StreamFrame | LogEvent

_EVENTS: dict[str, Any] = {c.type: c.parse for c in (
    UserMessage, TurnStart, ToolCall, ToolResult, AgentState, Handoff, ApprovalRequest,
    ApprovalResult, Reply, Cancelled, TurnFailure, CallState, PostedMessage, Takeover,
    Presence, Transcript)} | {
    "tool": ToolCall.parse}
_STREAM: dict[str, Any] = {c.type: c.parse for c in (Chunk, Partial)}
_CONTROL: dict[str, Any] = {c.type: c.parse for c in (
    Welcome, Resumed, Cancelling, Pong, ErrorFrame)} | {"ack": _parse_ack}


def parse_event(d: dict[str, Any]) -> LogEvent:
    """A session log event (``{"offset": 21, "type": "reply", ...}``) as its class."""
    kind = _str(d, "type")
    parse = _EVENTS.get(kind)
    if parse is None:
        return UnknownEvent(kind, _int(d, "offset"), d)
    event: LogEvent = parse(d)
    return event


def parse_stream(d: dict[str, Any]) -> StreamFrame | None:
    """A ``chunk``, ``partial`` or interim ``transcript`` frame (no ``offset``) as its class;
    None for any other."""
    if d.get("type") == "transcript" and "offset" not in d:
        return Transcript.parse(d)
    parse = _STREAM.get(_str(d, "type"))
    if parse is None:
        return None
    frame: StreamFrame = parse(d)
    return frame


def parse_frame(d: dict[str, Any]) -> ServerFrame:
    """Any frame an edge sends, as its class (control and stream frames have no ``offset``
    meaning a log position, so they are told apart by ``type`` first)."""
    kind = _str(d, "type")
    control = _CONTROL.get(kind)
    if control is not None:
        frame: ControlFrame = control(d)
        return frame
    return parse_stream(d) or parse_event(d)
