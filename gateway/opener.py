"""Opening a connection's session in Redis, and what a failure to open tells the client.

After the upgrade the node hands the connection's state here: an owner's connection opens
(joins, or creates within its user's limits) its session, an operator's joins an existing
one. The Redis calls of the handshakes of the moment go together (``Batcher``,
:data:`OPEN_BATCH` at most each). :func:`refusal` maps a failure to the close the client
gets (docs/protocol.md, section 8) and counts it.
"""

from __future__ import annotations

import logging
from collections import Counter

from agentia.codes import BusUnavailable, CloseCode
from gateway.session_protocol import SessionProtocol
from sessions.bus import Bus, Forbidden, Missing, SessionInfo
from sessions.errors import AgentMismatch, UnknownAgent
from sessions.opening import Batcher, Refused, UserLimits
from sessions.redis_core import down

log = logging.getLogger("agentia.edge")
OPEN_BATCH = 256
"""Session opens sent to Redis in one pipeline at most."""


class SessionOpener:
    """Opens the sessions of one edge's connections, batched."""

    def __init__(self, bus: Bus, node_id: str, users: UserLimits) -> None:
        self.bus = bus
        self.node_id = node_id
        self.users = users
        self._open_batch = Batcher(bus.open_sessions, OPEN_BATCH)
        self._reserve_batch = Batcher(users.reserve, OPEN_BATCH)
        self.generated: set[str] = set()
        """Session ids this edge made up at admission, not yet opened: new for sure."""

    async def open(self, state: SessionProtocol) -> SessionInfo:
        """Open the connection's session (raises what :func:`refusal` maps)."""
        if state.operator:
            return await self._open_operated(state.session, state.agent)
        return await self._open_session(state.session, state.user,
                                        state.session in self.generated, state.agent)

    async def _open_session(self, sid: str, user: str, generated: bool,
                            agent: str) -> SessionInfo:
        """Open an existing session, or count a new one against its user's limits and then
        create it (batched with the other handshakes of the moment, see Batcher). A session
        id the edge generated is new: it is counted at once, saving a round trip. ``agent``:
        asked for ("" = the session's, or the default one); a new session asking for an
        unknown one is refused before it is counted."""
        lim = self.users.limits
        if not (lim.sessions_per_hour or lim.sessions):
            return await self._open_batch((sid, user, self.node_id, True, agent))
        if not generated:
            try:
                return await self._open_batch((sid, user, self.node_id, False, agent))
            except Missing:
                pass
        if await self.bus.agent_for_new(agent) == "-":
            raise UnknownAgent(agent)
        await self._reserve_batch((user, sid))  # raises Refused over a limit
        return await self._open_batch((sid, user, self.node_id, True, agent))

    async def _open_operated(self, sid: str, agent: str) -> SessionInfo:
        """An operator joins an existing session as if it were its owner (never creates
        one: a missing session is refused with 4501)."""
        owner = await self._owner(sid)
        if owner is None:
            raise Refused(CloseCode.FORBIDDEN, "no such session to operate",
                          "handshake_forbidden")
        try:
            return await self._open_batch((sid, owner, self.node_id, False, agent))
        except Missing:
            raise Refused(CloseCode.FORBIDDEN, "no such session to operate",
                          "handshake_forbidden") from None

    @down
    async def _owner(self, sid: str) -> str | None:
        return await self.bus.session_owner(sid)  # a plain read: an outage is BusUnavailable


def refusal(exc: Exception, sid: str, metrics: Counter[str]) -> tuple[CloseCode, str]:
    """The close for a session that could not be opened, counted in ``metrics``; anything
    unexpected is logged and told as an outage (1013, retry)."""
    if isinstance(exc, Refused):
        metrics[exc.tally] += 1
        return exc.code, exc.reason
    if isinstance(exc, Forbidden):
        metrics["handshake_forbidden"] += 1
        return CloseCode.FORBIDDEN, "this session belongs to another user"
    if isinstance(exc, UnknownAgent):
        metrics["refused_unknown_agent"] += 1
        return CloseCode.UNKNOWN_AGENT, str(exc)
    if isinstance(exc, AgentMismatch):
        metrics["refused_agent_mismatch"] += 1
        return CloseCode.AGENT_MISMATCH, str(exc)
    if not isinstance(exc, BusUnavailable):
        log.exception("opening session %s failed", sid, exc_info=exc)
    metrics["refused_redis_down"] += 1
    return CloseCode.TRY_AGAIN_LATER, "message bus unavailable: retry shortly"
