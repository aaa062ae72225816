"""Which chunk of a running turn one connection may be written next (docs/protocol.md, chunk).

Pure rules over :class:`~sessions.roles.ChunkAt` (the run of the last chunk a connection got and
its ``seq``), kept apart from :mod:`gateway.session_protocol`, which holds one per connection.
A connection gets a run's chunks in ``seq`` order, each once, with no hole: the first it gets is
``seq`` 1, or the run's partial (its text so far) is read first and holds what came before.

The partial buffer is written with every ``PARTIAL_EVERY``-th chunk only (sessions/keys.py), so
a partial may stop short of the chunks a connection gets: the chunks after it are dropped until
the next such chunk, which the buffer holds by the time it arrives, and the partial is read
again then (one read per ``PARTIAL_EVERY`` chunks at most while behind, never one per chunk).

A chunk or partial this module let through but the connection's send budget had no room for is
dropped for that connection (:func:`on_dropped`): the connection goes back to waiting for the
run's next ``PARTIAL_EVERY``-th chunk, as one that missed chunks does.
"""

from __future__ import annotations

from enum import Enum

from sessions.keys import PARTIAL_EVERY
from sessions.roles import ChunkAt, Partial

READING = -1
"""``seq`` while a partial is being read: chunks are dropped (it will hold them, or the next
read will)."""


class Verdict(Enum):
    WRITE = "write"
    """Write the chunk."""
    READ_PARTIAL = "read_partial"
    """Earlier chunks of the run were missed: read the partial instead."""
    DROP = "drop"
    """A duplicate, an older run's, or one a partial read now or later will hold."""


def on_chunk(cur: ChunkAt | None, at: ChunkAt) -> tuple[ChunkAt | None, Verdict]:
    """The connection's new position and what to do with the chunk at ``at``."""
    if cur is not None:
        if (at.turn, at.attempt) < (cur.turn, cur.attempt):
            return cur, Verdict.DROP
        if at.run == cur.run:
            if cur.seq < 0 or at.seq <= cur.seq:
                return cur, Verdict.DROP
            if at.seq == cur.seq + 1:
                return at, Verdict.WRITE
            if at.seq % PARTIAL_EVERY:  # the buffer is behind: wait for the piece it holds
                return cur, Verdict.DROP
            return ChunkAt(at.turn, at.attempt, at.run, READING), Verdict.READ_PARTIAL
    if at.seq == 1:
        return at, Verdict.WRITE
    return ChunkAt(at.turn, at.attempt, at.run, READING), Verdict.READ_PARTIAL


def on_partial(cur: ChunkAt | None, partial: Partial | None) -> tuple[ChunkAt | None, bool]:
    """The connection's new position once the partial was read (None: none yet, none any
    more, or unreadable), and whether to write it (not when older than the run the connection
    is in). Without one to write, a connection that was reading waits at ``seq`` 0 of its
    run: it reads again at the run's next ``PARTIAL_EVERY``-th chunk (if the turn ended, its
    ending event carries the whole text and no chunk comes)."""
    if partial is None or (cur is not None and (partial.turn, partial.attempt)
                           < (cur.turn, cur.attempt)):
        if cur is not None and cur.seq == READING:
            return ChunkAt(cur.turn, cur.attempt, cur.run, 0), False
        return cur, False
    return ChunkAt(partial.turn, partial.attempt, partial.run, partial.seq), True


def on_dropped(cur: ChunkAt | None) -> ChunkAt | None:
    """The connection's position once the chunk or partial that put it at ``cur`` was dropped
    (it did not fit the send budget): ``seq`` 0 of its run, so the chunks after it are dropped
    until the run's next ``PARTIAL_EVERY``-th one, which reads the partial again (holding the
    dropped text); if the run ends first, its ending event carries the whole text."""
    if cur is None:
        return None
    return ChunkAt(cur.turn, cur.attempt, cur.run, 0)
