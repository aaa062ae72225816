"""A paused turn's values (sessions/approvals.py, sessions/pausing.py): the tool calls waiting
for a person, their decisions, and the pause record as Redis holds it. Re-exported by
sessions/roles.py, whose ``Approvals`` role carries them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Request:
    """One tool call waiting for a person: what the ``approval_request`` event says."""

    call_id: str
    name: str
    arguments: Any
    agent: str
    expires: float
    private: bool = False
    """A private tool: the event leaves ``arguments`` out (docs/protocol.md)."""


@dataclass(frozen=True, slots=True)
class Decision:
    approved: bool
    by: str
    message: str | None


@dataclass(frozen=True, slots=True)
class PauseRecord:
    """A paused turn as Redis holds it: its state and its requests, with their decisions."""

    state: str
    text: str
    """The reply's text before the pause (a new attempt streams it again)."""
    requests: dict[str, Request]
    decisions: dict[str, Decision]
