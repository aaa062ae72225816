"""Which chunk of a running turn one connection may be written next (docs/protocol.md, chunk).

Pure rules over :class:`~sessions.roles.ChunkAt` (the run of the last chunk a connection got and
its ``seq``), kept apart from :mod:`gateway.session_protocol`, which holds one per connection.
A connection gets a run's chunks in ``seq`` order, each once, with no hole: the first it gets is
``seq`` 1, or the run's partial (its text so far) is read first and holds what came before.
"""

from __future__ import annotations

from enum import Enum

from sessions.roles import ChunkAt, Partial

GAVE_UP = -2
"""``seq`` of a run whose partial could not be had: its chunks are dropped (the turn's ending
event carries the whole text)."""
READING = -1
"""``seq`` while a partial is being read: chunks are dropped (it will hold them)."""


class Verdict(Enum):
    WRITE = "write"
    """Write the chunk."""
    READ_PARTIAL = "read_partial"
    """Earlier chunks of the run were missed: read the partial instead."""
    DROP = "drop"
    """A duplicate, an older run's, or one the partial being read will hold."""


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
    if at.seq == 1:
        return at, Verdict.WRITE
    return ChunkAt(at.turn, at.attempt, at.run, READING), Verdict.READ_PARTIAL


def on_partial(cur: ChunkAt | None, partial: Partial | None) -> tuple[ChunkAt | None, bool]:
    """The connection's new position once the partial was read (None: none, or unreadable),
    and whether to write it (not when older than the run the connection is in)."""
    if partial is None or (cur is not None and (partial.turn, partial.attempt)
                           < (cur.turn, cur.attempt)):
        if cur is not None and cur.seq == READING:
            return ChunkAt(cur.turn, cur.attempt, cur.run, GAVE_UP), False
        return cur, False
    return ChunkAt(partial.turn, partial.attempt, partial.run, partial.seq), True
