"""The SDK's one exception tree: what a caller of :class:`AgentiaClient` may catch.

:class:`ClientError` is the root. Connection failures that are worth retrying never reach
the caller (the client reconnects); what does is terminal for the client
(:class:`AuthenticationError`, :class:`ConnectError`, :class:`ReconnectFailed`,
:class:`ServerClosed`, :class:`ClientClosed`) or for one call (the rest).
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Root of the SDK's exceptions."""


class ConnectError(ClientError):
    """The edge refused the WebSocket handshake with an HTTP status that retrying will not
    fix (e.g. 400 bad session id, 404 wrong path)."""

    def __init__(self, status: int, reason: str, url: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {reason}")
        self.status = status
        self.reason = reason
        self.url = url


class AuthenticationError(ConnectError):
    """HTTP 401 (token missing, invalid or expired) or 403 (the session belongs to another
    user). The client stops: fix the token or the session, then connect again."""


class ReconnectFailed(ClientError):
    """``Backoff.max_attempts`` connection attempts in a row failed."""

    def __init__(self, attempts: int, last: BaseException | None) -> None:
        super().__init__(f"gave up after {attempts} failed connection attempts: {last!r}")
        self.attempts = attempts
        self.last = last


class ServerClosed(ClientError):
    """The edge closed the connection with a code that says not to reconnect, e.g. 4502
    (the user created too many sessions this hour: try again later) or 4503 (too many live
    sessions) when opening a new session, 4504 (no such agent) or 4505 (the session talks to
    another agent)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection closed by the edge with {code}: {reason or '(no reason)'}")
        self.code = code
        self.reason = reason


class ClientClosed(ClientError):
    """The client was closed (by :meth:`AgentiaClient.close`) or never connected."""


class ConnectionLost(ClientError):
    """The connection dropped while a ``cancel`` or an ``approve`` was in flight: it may or
    may not have been recorded (neither is re-sent automatically, see
    :meth:`AgentiaClient.cancel` and :meth:`AgentiaClient.approve`)."""


class RequestError(ClientError):
    """The edge refused a request with an ``error`` frame (or the client refused it locally
    because it breaks the edge's limits)."""

    def __init__(self, code: str, message: str, *, retryable: bool = False,
                 ref: str | None = None, retry_after_ms: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.ref = ref
        self.retry_after_ms = retry_after_ms

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> RequestError:
        ms = frame.get("retry_after_ms")
        ref = frame.get("ref")
        return cls(str(frame.get("code", "unknown")), str(frame.get("message", "")),
                   retryable=frame.get("retryable") is True,
                   ref=ref if isinstance(ref, str) else None,
                   retry_after_ms=ms if isinstance(ms, int) and not isinstance(ms, bool)
                   else None)


class SendTimeout(ClientError, TimeoutError):
    """No ``ack`` within the timeout. The message may or may not have been stored: send it
    again with the same ``id`` to find out (the edge acks a duplicate with its offset)."""

    def __init__(self, client_id: str, timeout: float) -> None:
        super().__init__(f"no ack for message {client_id!r} within {timeout:g} s")
        self.id = client_id


class SessionReset(ClientError):
    """The session was re-created (new epoch) while :meth:`AgentiaClient.ask` waited for a
    turn of the old one; that turn's outcome is lost."""


class TurnError(ClientError):
    """The turn asked for with :meth:`AgentiaClient.ask` did not end with a reply."""

    def __init__(self, turn: int, message: str) -> None:
        super().__init__(message)
        self.turn = turn


class TurnFailed(TurnError):
    """The turn ended with ``turn_error`` (``turn_failed``, ``turn_timeout`` or ``guardrail``)."""

    def __init__(self, turn: int, code: str, message: str) -> None:
        super().__init__(turn, f"turn {turn} failed: {code}: {message}")
        self.code = code


class TurnCancelled(TurnError):
    """The turn was cancelled; ``text`` is what its last attempt had produced."""

    def __init__(self, turn: int, text: str) -> None:
        super().__init__(turn, f"turn {turn} was cancelled")
        self.text = text
