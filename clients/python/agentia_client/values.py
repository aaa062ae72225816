"""Small values of the ``agentia.v1`` protocol: events, acks, resets and the edge's limits."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

Event: TypeAlias = dict[str, Any]
"""A session log event as sent by the edge: ``{"offset": 21, "type": "reply", ...}`` (or, from
:meth:`AgentiaClient.events` with ``stream_text=True``, a ``chunk``/``partial`` frame)."""
TokenSource: TypeAlias = str | Callable[[], Awaitable[str]]
Trace: TypeAlias = Callable[[Literal["in", "out"], dict[str, Any]], None]

SESSION_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
AGENT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
"""Agent names the edge accepts in ``?agent=``."""
MAX_CLIENT_ID = 64
CONTROL_FRAMES = frozenset({"welcome", "ack", "resumed", "cancelling", "pong", "error"})
STREAM_FRAMES = frozenset({"chunk", "partial"})
"""A running turn's reply text: frames without an offset, not session log events."""


@dataclass(frozen=True, slots=True)
class Ack:
    """The edge stored the message: ``offset`` is its turn id (``turn`` in events)."""

    id: str
    offset: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Reset:
    """The view of the session has a gap: discard it and rebuild it from what follows.

    Yielded by :meth:`AgentiaClient.events` when a resume could not be recovered (the log was
    trimmed, or the session was re-created with a new epoch and its offsets restarted from 1)
    or when the edge reported that Redis lost the session. The events after it are what the
    log still holds (from its oldest entry), then live ones; offsets after a Reset with a new
    ``epoch`` start again and are only comparable within that epoch.
    """

    epoch: str
    offset: int
    """The edge's offset when it reported the reset."""
    previous_epoch: str | None
    requested: bool
    """False when the edge sent it unrequested (Redis lost the session)."""

    @property
    def epoch_changed(self) -> bool:
        return self.epoch != self.previous_epoch


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits an edge enforces, from ``welcome.limits``."""

    max_frame_bytes: int = 64 * 1024
    max_text_chars: int = 16_000
    rate_per_s: float = 5.0
    burst: float = 20.0
    send_queue: int = 256
    heartbeat_s: float = 25.0
    idle_timeout_s: float = 90.0

    @classmethod
    def from_welcome(cls, raw: Any) -> Limits:
        d = raw if isinstance(raw, dict) else {}
        base = cls()

        def num(name: str, default: float) -> float:
            v = d.get(name)
            if isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
                return float(v)
            return default

        return cls(max_frame_bytes=int(num("max_frame_bytes", base.max_frame_bytes)),
                   max_text_chars=int(num("max_text_chars", base.max_text_chars)),
                   rate_per_s=num("rate_per_s", base.rate_per_s),
                   burst=num("burst", base.burst),
                   send_queue=int(num("send_queue", base.send_queue)),
                   heartbeat_s=num("heartbeat_s", base.heartbeat_s),
                   idle_timeout_s=num("idle_timeout_s", base.idle_timeout_s))


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0

