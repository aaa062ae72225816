"""Reconnect policy: where to connect, how long to wait between attempts, when to stop.

Pure functions and values, no I/O: the close-code table (docs/protocol.md, section 8), the
HTTP statuses worth retrying, the jittered exponential :class:`Backoff`, the URL built
for each attempt and the checks of the client's URLs and settings.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from agentia_client.codes import CloseCode
from agentia_client.values import AGENT_NAME_RE, SESSION_ID_RE

WS_PATH = "/v1/ws"
STABLE_AFTER_S = 10.0
"""A connection that lasted this long resets the reconnect backoff."""
FORBIDDEN_CLOSE = CloseCode.FORBIDDEN.value
"""The edge's close when the session belongs to another user (after the upgrade)."""
_ALSO_RECONNECT = frozenset({CloseCode.NORMAL, CloseCode.MESSAGE_TOO_BIG})
"""Not "reconnect" in the protocol table, but resuming after them is safe: a 1000 the client
did not ask for, and 1009 (the frame that was too big is not re-sent as is)."""
CLOSE_CODES: dict[int, tuple[str, Literal["reconnect", "stop"]]] = {
    c.value: (c.name, "reconnect" if c.reconnect or c in _ALSO_RECONNECT else "stop")
    for c in CloseCode
}
"""The edge's close codes (docs/protocol.md, section 8) and what the client does after each:
4501 raises AuthenticationError(403), 4502/4503 ServerClosed (the app may retry later), 4506
ServerClosed (the session was deleted). Codes not listed follow the ranges of
:func:`close_action`."""
_TERMINAL_CLOSES = frozenset({1002, 1003, 1007, 1008, 1010})
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: ``min(cap, base * 2**n)`` with the top ``jitter`` fraction
    randomised, for the n-th consecutive failure (n = 0, 1, ...)."""

    base: float = 0.5
    cap: float = 30.0
    max_attempts: int | None = None
    """Failed connection attempts in a row (no ``welcome``) before giving up with
    :class:`ReconnectFailed`; ``None``: never give up."""
    jitter: float = 0.5
    max_first_attempts: int | None = None
    """Like ``max_attempts``, for the attempts before the first ``welcome`` (e.g. 1: fail at
    once when nothing listens, yet keep reconnecting later); ``None``: ``max_attempts``."""

    def __post_init__(self) -> None:
        if not (self.base > 0 and self.cap >= self.base and 0 <= self.jitter <= 1):
            raise ValueError("Backoff needs base > 0, cap >= base and 0 <= jitter <= 1")
        for limit in (self.max_attempts, self.max_first_attempts):
            if limit is not None and limit < 1:
                raise ValueError("Backoff's attempt limits must be at least 1 (or None)")

    def attempts(self, connected_before: bool) -> int | None:
        """The cap on failed attempts in a row, before or after the first connection."""
        if connected_before or self.max_first_attempts is None:
            return self.max_attempts
        return self.max_first_attempts

    def delay(self, n: int, rand: Callable[[], float] = random.random) -> float:
        top = min(self.cap, self.base * 2.0 ** min(max(n, 0), 60))
        return top * (1.0 - self.jitter * rand())


def close_action(code: int | None) -> Literal["reconnect", "stop"]:
    """What a close code asks the client to do (docs/protocol.md, section 8).

    ``None`` (no close frame, e.g. the edge died: 1006) reconnects; so do the standard codes
    except the protocol violations (1002, 1003, 1007, 1008, 1010), and 4000-4499. 4500-4999
    are terminal. A 1000 the client did not ask for also reconnects, as the protocol says.
    """
    if code is None:
        return "reconnect"
    if code in CLOSE_CODES:
        return CLOSE_CODES[code][1]
    if 4500 <= code <= 4999 or code in _TERMINAL_CLOSES:
        return "stop"
    return "reconnect"


def session_url(url: str, session: str | None, agent: str | None = None) -> str:
    """``url`` with the ``/v1/ws`` path when it has none, ``?session=`` set and, when given,
    ``?agent=`` (replacing one in ``url``)."""
    parts = urlsplit(url)
    path = parts.path if parts.path not in ("", "/") else WS_PATH
    drop = {"session", "agent"} if agent else {"session"}
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in drop]
    if session:
        query.append(("session", session))
    if agent:
        query.append(("agent", agent))
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), ""))


def _retry_after(value: str | None) -> float:
    """Seconds from an HTTP ``Retry-After`` header; 0 when absent or not a number."""
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


def _checked_urls(urls: str | Sequence[str]) -> list[str]:
    """``urls`` as a list, each checked to be a ws:// or wss:// URL."""
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list:
        raise ValueError("at least one URL is needed")
    for u in url_list:
        try:
            parse_uri(u)
        except InvalidURI as exc:
            raise ValueError(f"not a ws:// or wss:// URL: {u!r}") from exc
    return url_list


def _check_settings(session: str | None, heartbeat_s: float | None, after: int | None,
                    max_pending: int, request_timeout: float, open_timeout: float,
                    agent: str | None = None) -> None:
    """Refuse settings the client cannot run with (``ValueError``)."""
    if session is not None and not SESSION_ID_RE.fullmatch(session):
        raise ValueError("session id must match [A-Za-z0-9_.:-]{1,64}")
    if agent is not None and not AGENT_NAME_RE.fullmatch(agent):
        raise ValueError("agent must match [a-z0-9][a-z0-9_-]{0,31}")
    if heartbeat_s is not None and heartbeat_s <= 0:
        raise ValueError("heartbeat_s must be positive")
    if after is not None and after < 0:
        raise ValueError("after must be >= 0")
    if max_pending < 1 or request_timeout <= 0 or open_timeout <= 0:
        raise ValueError("max_pending >= 1, request_timeout > 0, open_timeout > 0 required")
