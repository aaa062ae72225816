"""A turn's reply text as it streams: the rules of docs/protocol.md, ``chunk`` (no I/O).

Tests drive it with plain dicts, without an event loop or a socket.
"""

from __future__ import annotations

from typing import Any

_ENDS_WITH_TEXT = frozenset({"reply", "cancelled"})


def _int(d: dict[str, Any], key: str, default: int) -> int:
    v = d.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else default


class TurnText:
    """The reply text of one turn, from its log events and its ``chunk``/``partial`` frames.

    Feed it, in the order the client applies them, the turn's ``turn_start``, ``chunk``,
    ``partial`` and ending event (other types are ignored); :attr:`text` is the reply so far.
    On ``turn_start`` the text is cleared (a new attempt, or the same one run again after an
    outage, starts over); a chunk is appended when its ``seq`` is :attr:`seq` + 1 (a lower
    one is a duplicate, a higher one a hole: both ignored); a chunk or partial of an older
    attempt than the latest seen is ignored; a ``partial`` replaces the text; the ending
    event's text (``reply``, ``cancelled``) is final and nothing after it changes the text.
    """

    __slots__ = ("attempt", "ended", "seq", "text", "turn")

    def __init__(self, turn: int) -> None:
        self.turn = turn
        self.attempt = 0
        """The latest attempt seen (0: none yet)."""
        self.seq = 0
        """Chunks applied to this run of :attr:`attempt`."""
        self.text = ""
        self.ended = False

    def __repr__(self) -> str:
        return (f"<TurnText turn={self.turn} attempt={self.attempt} seq={self.seq} "
                f"ended={self.ended} text={self.text!r:.60}>")

    def apply(self, frame: dict[str, Any]) -> bool:
        """Apply one event or frame of this turn; True when it was applied (for a chunk
        or partial: it is not a duplicate, a hole, stale, or after the end)."""
        kind = frame.get("type")
        if kind == "turn_start":
            if self.ended:
                return False
            self.attempt, self.seq, self.text = _int(frame, "attempt", 1), 0, ""
            return True
        if kind in _ENDS_WITH_TEXT or kind == "turn_error":
            if not self.ended and kind in _ENDS_WITH_TEXT:
                text = frame.get("text")
                self.text = text if isinstance(text, str) else self.text
            elif not self.ended:  # turn_error: no final text, what streamed is dropped
                self.text = ""
            self.ended = True
            return True
        if kind == "chunk":
            return self._chunk(frame)
        if kind == "partial":
            return self._partial(frame)
        return False

    def _chunk(self, frame: dict[str, Any]) -> bool:
        attempt, seq = _int(frame, "attempt", 1), _int(frame, "seq", 0)
        text = frame.get("text")
        if self.ended or attempt < self.attempt or not isinstance(text, str):
            return False
        if attempt > self.attempt:
            # a run whose turn_start this connection did not see (it joined mid-turn): its
            # first chunk starts it; any later one needs the partial the edge sends first
            if seq != 1:
                return False
            self.attempt, self.seq, self.text = attempt, 0, ""
        if seq != self.seq + 1:
            return False
        self.seq, self.text = seq, self.text + text
        return True

    def _partial(self, frame: dict[str, Any]) -> bool:
        attempt, seq = _int(frame, "attempt", 1), _int(frame, "seq", 0)
        text = frame.get("text")
        if self.ended or attempt < self.attempt or seq < 0 or not isinstance(text, str):
            return False
        if attempt == self.attempt and seq == self.seq and text == self.text:
            return False  # exactly what is applied already
        self.attempt, self.seq, self.text = attempt, seq, text
        return True
