"""Error and close codes: documented data (see docs/protocol.md), each retryable or terminal.

Close code ranges tell a client what to do without knowing every code:

* 1000-1015: standard WebSocket codes (1001, 1011 and 1012 mean "reconnect after a backoff").
* 4000-4499: reconnect (with backoff) and resume from the last offset.
* 4500-4999: terminal: do not reconnect to this session (4501 another user's session, 4502
  and 4503 a new session refused by a per-user limit: the application may retry later; 4504
  no such agent, 4505 the session talks to another agent, 4506 the session was deleted).
"""

from __future__ import annotations

import enum


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    SLOW = 4000
    IDLE = 4001
    FLOOD = 4002
    TOKEN_EXPIRED = 4003
    SESSION_LOST = 4004
    TOO_MANY_CONNECTIONS = 4005
    """The user holds AGENTIA_MAX_CONNECTIONS_PER_USER_TOTAL connections over all edges."""
    FORBIDDEN = 4501
    NEW_SESSIONS_RATE = 4502
    """The user created AGENTIA_MAX_SESSIONS_PER_HOUR sessions in the last hour."""
    TOO_MANY_SESSIONS = 4503
    """The user has AGENTIA_MAX_SESSIONS_PER_USER live sessions."""
    UNKNOWN_AGENT = 4504
    """A new session asked (``?agent=``) for an agent that is not registered."""
    AGENT_MISMATCH = 4505
    """The session exists and talks to another agent than the one asked for."""
    SESSION_DELETED = 4506
    """The session was deleted (``DELETE /v1/sessions/{id}`` or of its user): do not
    reconnect to it (a new connection with its id would start a new, empty session)."""

    @property
    def reconnect(self) -> bool:
        return self in _RECONNECT or 4000 <= self.value < 4500


_RECONNECT = {CloseCode.GOING_AWAY, CloseCode.SERVICE_RESTART, CloseCode.INTERNAL_ERROR,
              CloseCode.TRY_AGAIN_LATER}


class ErrorCode(enum.StrEnum):
    """Codes carried by ``error`` frames and ``turn_error`` events."""

    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    OVERLOADED = "overloaded"
    TURN_NOT_ACTIVE = "turn_not_active"
    NO_SUCH_APPROVAL = "no_such_approval"
    """An ``approve`` names no pending request of the session (unknown, answered, expired)."""
    TURN_FAILED = "turn_failed"
    TURN_TIMEOUT = "turn_timeout"
    GUARDRAIL = "guardrail"
    """``turn_error`` event: an input or output guardrail of the agent tripped."""
    SESSION_LOST = "session_lost"
    INTERNAL = "internal"


RETRYABLE: frozenset[ErrorCode] = frozenset(
    {ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE, ErrorCode.OVERLOADED, ErrorCode.INTERNAL}
)


class AgentiaError(Exception):
    """Root of Agentia's exception tree: an error a client can be told about."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        ref: str | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
        self.retry_after_ms = retry_after_ms

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ProtocolError(AgentiaError):
    """The client sent a frame we cannot accept (the connection stays open)."""


class SessionLost(AgentiaError):
    """Redis no longer has the session (lost without persistence, or expired): the connection
    is closed with 4004 and a reconnect opens it afresh (``resume`` then says not recovered)."""

    def __init__(self, ref: str | None = None) -> None:
        super().__init__(ErrorCode.SESSION_LOST, "session state was lost: reconnect", ref)


class BusUnavailable(AgentiaError):
    """Redis could not be reached; the operation may be retried."""

    def __init__(self, message: str = "the message bus is unavailable, retry shortly") -> None:
        super().__init__(ErrorCode.UNAVAILABLE, message, None, 1000)
