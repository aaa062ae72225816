"""Read timeouts of many waiting readers by one timer (sessions/model_http.py's connections):
a timer started and cancelled per read was ~9 % of a streaming worker's main thread at 1,000
streams (py-spy)."""

from __future__ import annotations

import asyncio
from typing import Protocol

TICK = 0.25
"""Seconds between two looks at the read deadlines: a read timeout fires up to this late."""


class Waiting(Protocol):
    """A reader waiting for bytes: when it last got some, how long it may wait, and how it
    fails."""

    last: float
    limit: float

    def expire(self, now: float) -> None: ...


class ReadDeadlines:
    """The read deadlines of one pool's waiting readers, looked at every :data:`TICK`
    seconds while any waits (one timer for all)."""

    __slots__ = ("_timer", "waiting")

    def __init__(self) -> None:
        self.waiting: set[Waiting] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None:
            self._timer = loop.call_later(TICK, self._look, loop)

    def _look(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        for conn in [c for c in self.waiting if c.last + c.limit <= now]:
            conn.expire(now)
        if self.waiting:
            self.watch(loop)
