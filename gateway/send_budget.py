"""The send budget's rules of one connection (docs/protocol.md#send-budget), mixed into
:class:`gateway.session_protocol.SessionProtocol`.

What may be queued for a client, when a replay waits for it to read, and when a client that
reads too slowly is closed ``4000 SLOW``. Pure, like the rest of the protocol: the edge passes
in what is queued and the clock; nothing here touches a socket.
"""

from __future__ import annotations

from typing import Protocol

from agentia.codes import CloseCode
from gateway import protocol as P
from gateway.actions import Close
from gateway.drops import CONTROL_SHARE

SLOW_BUDGET = "send budget exceeded: reading too slowly"


class _Rules(Protocol):
    @property
    def limits(self) -> P.Limits: ...
    @property
    def send_stall_s(self) -> float: ...


class SendBudget:
    """The send-budget checks of a connection, over its edge's ``rules``."""

    __slots__ = ()
    rules: _Rules

    def on_write(self, pending: int, size: int, queued_frames: int,
                 optional: bool = False) -> Close | None:
        """A frame of ``size`` bytes is to be queued while ``pending`` bytes (``queued_frames``
        frames in the outbox) wait: over the send budget or the send queue, close SLOW (one
        frame larger than the budget still goes out when nothing else is waiting); an
        ``optional`` frame leaves the control frames' share free (``drops.CONTROL_SHARE``)."""
        lim = self.rules.limits
        budget, queue = lim.send_budget_bytes, lim.send_queue
        if optional:
            budget, queue = budget - budget // CONTROL_SHARE, queue - queue // CONTROL_SHARE
        if pending and pending + size > budget:
            return Close(CloseCode.SLOW, SLOW_BUDGET)
        if queued_frames and queued_frames >= queue:
            return Close(CloseCode.SLOW, "send queue full: reading too slowly")
        return None

    def over_budget(self, pending: int) -> Close | None:
        """After the library itself wrote (a pong to a WebSocket PING): SLOW if over budget."""
        return self.on_write(pending, 0, 0)

    def must_pace(self, pending: int, queued_frames: int, size: int = 0) -> bool:
        """A replay waits while half the send budget (or half the send queue) is used, and a
        frame of ``size`` bytes until it fits next to what waits (else it would close SLOW)."""
        lim = self.rules.limits
        return (pending >= lim.send_budget_bytes // 2 or queued_frames >= lim.send_queue // 2
                or (pending > 0 and pending + size > lim.send_budget_bytes))

    def stalled(self, since: float, now: float) -> Close | None:
        """Frames have waited without any getting out since ``since``: SLOW after
        ``send_stall_s``."""
        if now - since > self.rules.send_stall_s:
            return Close(CloseCode.SLOW, "send stalled: reading too slowly")
        return None
