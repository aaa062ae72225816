"""Keys and TTLs of the deployment-wide limits per user (sessions/opening.py), split out of
sessions/keys.py (which re-exports them: every key name is still found from there)."""

from __future__ import annotations

from dataclasses import dataclass

# Deployment-wide limits per user (sessions/opening.py): every key of one user shares the tag
# ``{u.<user>}`` (as ``Keys.user_sessions`` does), so each limit's script runs on one slot.

CONN_LEASE_S = 60
"""A connection's entry in its user's connection set lives this long unless its edge renews
it (every CONN_LEASE_S / 3): the entries of an edge that died without draining expire."""
NEW_SESSION_TTL = 3600
"""Default of ``AGENTIA_NEW_SESSION_TTL_S``: a session that never got a turn expires this
long after it was last opened; its first turn gives it ``SESSION_TTL``."""
NEW_SESSIONS_WINDOW_S = 3600
"""The window of ``AGENTIA_MAX_SESSIONS_PER_HOUR`` (sliding)."""


@dataclass(frozen=True, slots=True)
class UserKeys:
    """Keys of the per-user limits under one prefix."""

    prefix: str = "agentia"

    def conns(self, user: str) -> str:
        """Sorted set: the user's live connections (``<node>:<conn>``) scored by the unix time
        (ms) their lease ends; bounded by ``AGENTIA_MAX_CONNECTIONS_PER_USER_TOTAL``."""
        return f"{self.prefix}:{{u.{user}}}:conns"

    def new(self, user: str) -> str:
        """Sorted set: sessions the user created in the last ``NEW_SESSIONS_WINDOW_S``, scored
        by creation time (unix s); bounded by ``AGENTIA_MAX_SESSIONS_PER_HOUR``."""
        return f"{self.prefix}:{{u.{user}}}:new"

    def live(self, user: str) -> str:
        """Sorted set: the user's sessions scored by when they expire (unix s, an estimate
        renewed by each turn); bounded by ``AGENTIA_MAX_SESSIONS_PER_USER``."""
        return f"{self.prefix}:{{u.{user}}}:live"
