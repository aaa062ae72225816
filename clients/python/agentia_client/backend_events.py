"""Typed classes of what backends and operators put into a session (docs/backend.md,
docs/protocol.md section 5): posted messages, takeovers and presence. Part of no turn;
:func:`agentia_client.events.parse_event` turns a decoded event into any of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from agentia_client.fields import _float, _int, _str


@dataclass(frozen=True, slots=True)
class PostedMessage:
    """``message``: a backend posted into the session (``role`` ``operator`` or ``system``,
    ``by`` the poster's token ``sub``); part of no turn."""

    type: ClassVar[str] = "message"
    offset: int
    role: str
    text: str
    by: str
    ts: float
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> PostedMessage:
        return cls(_int(d, "offset"), _str(d, "role"), _str(d, "text"), _str(d, "by"),
                   _float(d, "ts"), d)


@dataclass(frozen=True, slots=True)
class Takeover:
    """``takeover``: an operator took the session over (``active``: the agent answers none of
    its turns, which end ``cancelled`` with ``reason`` ``"takeover"``) or gave it back;
    ``by`` is the operator's token ``sub``; part of no turn."""

    type: ClassVar[str] = "takeover"
    offset: int
    active: bool
    by: str
    ts: float
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Takeover:
        return cls(_int(d, "offset"), d.get("active") is True, _str(d, "by"), _float(d, "ts"),
                   d)


@dataclass(frozen=True, slots=True)
class Presence:
    """``presence`` (only where the deployment turned it on): who is in the session after a
    change: the owner's connected ``devices``, whether an ``operator``'s connection is open
    and a voice ``call`` holds it; part of no turn."""

    type: ClassVar[str] = "presence"
    offset: int
    devices: int
    operator: bool
    call: bool
    ts: float
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Presence:
        return cls(_int(d, "offset"), _int(d, "devices"), d.get("operator") is True,
                   d.get("call") is True, _float(d, "ts"), d)
