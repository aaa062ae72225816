"""What the edge writes about its users' sessions, in batches: each user's session list (the
sessions they opened, ``GET /v1/sessions``) and each session's presence (its devices).

One round trip per half second instead of one per handshake: a storm of 5,000 handshakes a
second would otherwise spend a third of its Redis calls here. A batch that fails is kept for
the next try, bounded (:data:`MAX_KEPT`).
"""

from __future__ import annotations

import asyncio
import logging

from agentia.codes import BusUnavailable
from sessions.backend_redis import PresenceWriter
from sessions.bus import Bus

log = logging.getLogger("agentia.edge")
MAX_KEPT = 100_000
"""(user, session) pairs kept after failed writes at most; beyond, a failed batch is dropped
(the session lists are refreshed by the next open of each session)."""


class SessionLists:
    """The (user, session) pairs opened since the last flush, and the presence to write."""

    def __init__(self, bus: Bus, presence: PresenceWriter) -> None:
        self.bus = bus
        self.presence = presence
        self.seen: dict[tuple[str, str], float] = {}
        """(user, session) opened since the last flush, with the time it was opened."""

    def opened(self, user: str, session: str, at: float) -> None:
        self.seen[user, session] = at

    async def flush_forever(self, every_s: float = 0.5) -> None:
        """Write the presence and the users' session lists every ``every_s`` seconds."""
        while True:
            await asyncio.sleep(every_s)
            await self.flush_presence()
            if not self.seen:
                continue
            batch, self.seen = self.seen, {}
            try:
                await self.bus.touch_user_sessions(batch)
            except Exception as exc:
                if not isinstance(exc, BusUnavailable):
                    log.exception("updating users' session lists failed")
                if len(self.seen) < MAX_KEPT:
                    self.seen = {**batch, **self.seen}

    async def flush_presence(self) -> None:
        """The devices that came and went since the last flush (kept for the next on failure)."""
        try:
            await self.presence.flush()
        except Exception as exc:
            if not isinstance(exc, BusUnavailable):
                log.exception("writing the sessions' presence failed")

    async def flush_last(self) -> None:
        """At shutdown: what is left, once (BusUnavailable is raised to the caller)."""
        if self.seen:
            await self.bus.touch_user_sessions(self.seen)
        await self.flush_presence()
