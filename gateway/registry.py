"""The edge's local registry: which of this process's connections are in which session.

No I/O: the node adds a connection at admission and removes it when it ends. The registry
keeps what admission checks (connections in all, per user) and what ``drain`` waits for (the
last connection gone).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.connection import Connection


class LocalSessions:
    """This edge's connections by session, counted in all and per user."""

    __slots__ = ("by_session", "count", "emptied", "per_user")

    def __init__(self) -> None:
        self.by_session: dict[str, set[Connection]] = {}
        self.count = 0
        self.per_user: Counter[str] = Counter()
        self.emptied = asyncio.Event()
        """Set when the count falls to zero (what ``drain`` waits for)."""

    def add(self, conn: Connection) -> None:
        self.by_session.setdefault(conn.state.session, set()).add(conn)
        self.per_user[conn.state.user] += 1
        self.count += 1

    def remove(self, conn: Connection) -> bool:
        """Drop from the registry; True if it was the session's last connection here."""
        st = conn.state
        conns = self.by_session.get(st.session)
        if conns is None or conn not in conns:
            return False
        conns.discard(conn)
        self.count -= 1
        if self.count == 0:
            self.emptied.set()
        self.per_user[st.user] -= 1
        if self.per_user[st.user] <= 0:
            del self.per_user[st.user]
        if conns:
            return False
        del self.by_session[st.session]
        return True

    def holds(self, conn: Connection) -> bool:
        """Whether ``conn`` is registered (not yet removed)."""
        return conn in self.by_session.get(conn.state.session, ())
