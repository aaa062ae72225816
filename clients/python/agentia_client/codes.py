"""The ``agentia.v1`` protocol's constants: its name, and the close and error codes.

The client's own copy of the server's table (docs/protocol.md, sections 7 and 8), so that this
package imports nothing but ``websockets`` and ``orjson``; a test in the server's repository
(tests/unit/test_client_codes.py) checks that it equals ``agentia/codes.py``.

Close code ranges tell a client what to do without knowing every code: 4000-4499 reconnect
and resume, 4500-4999 are terminal (:func:`agentia_client.close_action` applies them).
"""

from __future__ import annotations

import enum

__version__ = "0.1.0"
PROTOCOL = "agentia.v1"
"""The WebSocket subprotocol the client asks for."""


class CloseCode(enum.IntEnum):
    """The close codes an edge sends (docs/protocol.md, section 8)."""

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
    """The user holds the most connections allowed over all edges."""
    FORBIDDEN = 4501
    """The session belongs to another user."""
    NEW_SESSIONS_RATE = 4502
    """The user created the most new sessions allowed this hour."""
    TOO_MANY_SESSIONS = 4503
    """The user has the most live sessions allowed."""
    UNKNOWN_AGENT = 4504
    """A new session asked for an agent the deployment does not run."""
    AGENT_MISMATCH = 4505
    """The session exists and talks to another agent than the one asked for."""
    SESSION_DELETED = 4506
    """The session was deleted (``DELETE /v1/sessions/{id}`` or of its user): do not
    reconnect to it (a new connection with its id would start a new, empty session)."""

    @property
    def reconnect(self) -> bool:
        """The protocol table's "reconnect" column. The client also reconnects after a 1000 it
        did not ask for and after 1009 (resuming is safe after both)."""
        return self in _RECONNECT or 4000 <= self.value < 4500


_RECONNECT = frozenset({CloseCode.GOING_AWAY, CloseCode.SERVICE_RESTART,
                        CloseCode.INTERNAL_ERROR, CloseCode.TRY_AGAIN_LATER})


class ErrorCode(enum.StrEnum):
    """Codes carried by ``error`` frames and ``turn_error`` events (section 7)."""

    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    OVERLOADED = "overloaded"
    TURN_NOT_ACTIVE = "turn_not_active"
    NO_SUCH_APPROVAL = "no_such_approval"
    TURN_FAILED = "turn_failed"
    TURN_TIMEOUT = "turn_timeout"
    GUARDRAIL = "guardrail"
    SESSION_LOST = "session_lost"
    INTERNAL = "internal"


RETRYABLE: frozenset[ErrorCode] = frozenset(
    {ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE, ErrorCode.OVERLOADED, ErrorCode.INTERNAL}
)
"""Error codes after which the same request may succeed (the ``retryable`` field)."""
