"""The one WARNING line of a close a client caused (4000 SLOW, 4002 FLOOD; session 14): the
edge's counters say how many connections it closed, this line says which and why, at most once
a minute per reason (CI's edge logs could not tell a flaky test's cause). docs/operations.md"""

from __future__ import annotations

import logging

from agentia.codes import CloseCode
from agentia.logs import Throttle

LOGGED = frozenset((CloseCode.SLOW, CloseCode.FLOOD))
"""The closes logged: the ones a client's own behaviour causes."""

log = logging.getLogger("agentia.edge")
_THROTTLE = Throttle(60.0)


def log_close(code: CloseCode, reason: str, session: str, user: str, pending: int,
              waiting: int, idle_s: float, sent: int, seen: int) -> None:
    """Log the close of a connection of ``session``/``user`` with ``pending`` bytes in
    ``waiting`` queued frames, the last frame out ``idle_s`` ago, its cursor at ``sent`` of
    ``seen`` (unless this reason was logged in the last minute)."""
    held = _THROTTLE.allow(reason)
    if held is None:
        return
    log.warning("closing %d %s (%s): session %s, user %s, %d bytes in %d queued frames, "
                "the last out %.1f s ago, sent offset %d of %d (%d more for this reason in "
                "the last minute not logged)", int(code), code.name, reason, session, user,
                pending, waiting, idle_s, sent, seen, held)
