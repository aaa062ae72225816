"""Typed classes of the agent's own session log events (docs/protocol.md, section 5): its tool
calls and results, state, handoffs and approvals. :func:`agentia_client.events.parse_event`
turns a decoded event into any of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from agentia_client.fields import _dict, _int, _opt_str, _str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """``tool_call``: the agent ``agent`` called the tool ``name`` with ``arguments`` (the
    parsed JSON object; a model's text that is not JSON comes as ``{"_raw": text}``).

    A private tool sends no arguments: ``private`` is True and ``arguments`` empty. The
    ``tool`` event of earlier edges (``turn``, ``name`` only) parses to this class too, with
    an empty ``call_id``."""

    type: ClassVar[str] = "tool_call"
    offset: int
    turn: int
    name: str
    call_id: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    agent: str | None = None
    private: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> ToolCall:
        return cls(_int(d, "offset"), _int(d, "turn"), _str(d, "name"), _str(d, "call_id"),
                   _dict(d, "arguments"), _opt_str(d, "agent"), d.get("private") is True, d)


@dataclass(frozen=True, slots=True)
class ToolResult:
    """``tool_result``: the tool call ``call_id`` returned ``output`` (a string, cut to 4,096
    characters: then ``truncated``), or failed (``is_error``). A private tool sends no
    output: ``private`` is True and ``output`` None."""

    type: ClassVar[str] = "tool_result"
    offset: int
    turn: int
    call_id: str
    name: str
    output: str | None
    is_error: bool
    truncated: bool = False
    private: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> ToolResult:
        return cls(_int(d, "offset"), _int(d, "turn"), _str(d, "call_id"), _str(d, "name"),
                   _opt_str(d, "output"), d.get("is_error") is True,
                   d.get("truncated") is True, d.get("private") is True, d)


@dataclass(frozen=True, slots=True)
class AgentState:
    """``state``: what the agent does now: ``thinking``, ``tool``, ``speaking``,
    ``listening`` (voice) or ``idle`` (written only when it changes). ``turn`` is None when
    the event belongs to no turn (voice ``listening``)."""

    type: ClassVar[str] = "state"
    offset: int
    turn: int | None
    state: str
    agent: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> AgentState:
        turn = d.get("turn")
        return cls(_int(d, "offset"),
                   turn if isinstance(turn, int) and not isinstance(turn, bool) else None,
                   _str(d, "state"), _opt_str(d, "agent"), d)


@dataclass(frozen=True, slots=True)
class Handoff:
    """``handoff``: the agent ``from_agent`` handed the conversation to ``to_agent`` (the
    wire fields ``from`` and ``to``)."""

    type: ClassVar[str] = "handoff"
    offset: int
    turn: int
    from_agent: str
    to_agent: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Handoff:
        return cls(_int(d, "offset"), _int(d, "turn"), _str(d, "from"), _str(d, "to"), d)


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """``approval_request``: the turn waits until a user answers with
    :meth:`AgentiaClient.approve` (``call_id``), or until ``expires`` (unix seconds), when it
    is rejected by timeout. Open until the :class:`ApprovalResult` with the same ``call_id``."""

    type: ClassVar[str] = "approval_request"
    offset: int
    turn: int
    call_id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    agent: str | None = None
    expires: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> ApprovalRequest:
        exp = d.get("expires")
        return cls(_int(d, "offset"), _int(d, "turn"), _str(d, "call_id"), _str(d, "name"),
                   _dict(d, "arguments"), _opt_str(d, "agent"),
                   float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool)
                   else None, d)


@dataclass(frozen=True, slots=True)
class ApprovalResult:
    """``approval_result``: the request ``call_id`` was answered (once): ``approved``, ``by``
    the ``sub`` of the user who answered, or ``"timeout"``, with their optional
    ``message``."""

    type: ClassVar[str] = "approval_result"
    offset: int
    turn: int
    call_id: str
    approved: bool
    by: str
    message: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> ApprovalResult:
        return cls(_int(d, "offset"), _int(d, "turn"), _str(d, "call_id"),
                   d.get("approved") is True, _str(d, "by"), _opt_str(d, "message"), d)
