"""Frames a connection may do without, and how the edge sees that a connection which dropped
some still reads (docs/protocol.md#send-budget).

A ``chunk``, a ``partial`` and an interim ``transcript`` that do not fit a connection's send
budget are dropped for it instead of closing it ``4000 SLOW``: what they carry comes back by
itself (the run's next tenth chunk brings a ``partial``, the turn's ending event the whole text,
the next interim or the final ``transcript`` replaces a lost interim). Everything else (log
events, which the log holds, and control frames) keeps its rule.

A client that reads nothing must still be closed SLOW after ``send_stall_s``. The stall rule of
the outbox (no frame got out) does not see bytes that sit in the library's write buffer (picows
writes there directly; a drop leaves the outbox empty), so a connection with bytes there (seen
at a drop, or by the sweep) is watched: :class:`Watch` counts what was queued since, so what
the kernel took is known whatever was added meanwhile (a sampled ``pending`` alone goes up and
down with a reader that reads and a stream that writes, and would call a steady reader
stalled). Bytes that all left the edge are no stall: nothing waits (the kernel holds them).
Pure: no clock, no socket.
"""

from __future__ import annotations

CONTROL_SHARE = 8
"""The last eighth of the send budget and of the send queue is kept for control frames (an
``ack``, a ``pong``, ``cancelling``): a frame the connection can do without (dropped) or read
later (a live log event: the connection falls behind) must leave it free, so a client that
reads while a burst has filled the rest still gets the answers to what it sends, not a SLOW
close (``SessionProtocol.on_write(optional=True)``)."""

CHUNK, PARTIAL, TRANSCRIPT = "chunk", "partial", "transcript"
"""The kinds of frame a connection may drop (``SessionProtocol.on_dropped``; the edge's
``dropped_<kind>`` tallies, ``agentia_dropped_frames_total{kind}``)."""


class Watch:
    """The progress of a connection's library buffer since bytes were seen waiting there (one
    per such connection, dropped once nothing waits: an idle connection holds none)."""

    __slots__ = ("added", "at", "base", "taken")

    def __init__(self, pending: int, now: float) -> None:
        self.base = pending
        """Bytes waiting (outbox and library buffer) when the watch began."""
        self.added = 0
        """Bytes queued since."""
        self.taken = 0
        """Bytes the kernel had taken since, at the last :meth:`progress`."""
        self.at = now
        """When that last grew (or the watch began)."""

    def progress(self, pending: int, now: float) -> float:
        """When the kernel last took bytes of this connection, ``pending`` bytes waiting now."""
        taken = self.base + self.added - pending
        if taken > self.taken:
            self.taken, self.at = taken, now
        return self.at
