"""What to say for one turn of a call, from its events (loop-free; voice/bridge.py feeds it):
the turn's text in order (chunks by ``seq``, partials replacing what came before), the
failure line, and the notice a long tool call gets."""

from __future__ import annotations

from typing import Any

from sessions import events as E
from sessions import keys as K

FAILED_TEXT = "Sorry, I could not answer that."
TOOL_NOTICE = "One moment. "
"""Said once a tool has run for ``AGENTIA_VOICE_TOOL_NOTICE_MS`` (once per wait)."""


class TurnFeed:
    """What to say for one turn, from its events (``chunk``, ``partial``, ``reply``, ...).

    A new run (``turn_start`` of a retried attempt, or of one run again) starts its text
    again; the part already spoken is skipped (a retry usually repeats it), the rest is
    spoken. A chunk out of order is skipped: a ``partial`` (read after the log, and again at
    the next ``PARTIAL_EVERY``-th chunk while behind: :attr:`behind`) or the ``reply`` brings
    its text.
    """

    def __init__(self, turn: int) -> None:
        self.turn = turn
        self.done = False
        self.spoken = 0
        self._text = ""
        self._skip = 0
        self._pos = 0
        self._seq = 0
        self._attempt = 0
        self.tools: set[str] = set()
        """Tool calls of the turn without a result yet."""
        self._tool_since = 0.0
        self._noticed = False
        self.behind = False
        """A chunk past a gap arrived whose text the partial buffer holds (every
        ``PARTIAL_EVERY``-th piece is written there first): read it again."""

    def on_event(self, event: dict[str, Any], now: float = 0.0) -> str:
        """Text to speak now ("" for none); sets ``done`` on the turn's last event. ``now``
        (monotonic seconds) times tool calls for :meth:`notice_in`."""
        if event.get("turn") != self.turn or self.done:
            return ""
        kind = event.get("type")
        if kind in (E.TOOL_CALL, E.TOOL_RESULT):
            self._on_tool(kind, str(event.get("call_id", "")), now)
            return ""
        if kind == "turn_start":
            self.tools.clear()
            self._attempt = int(event.get("attempt", 1))
            if self._text or self._seq:
                self._text, self._pos, self._skip, self._seq = "", 0, self.spoken, 0
            return ""
        if kind in (E.CHUNK, E.PARTIAL):
            if int(event.get("attempt", 0)) < self._attempt:
                return ""
            seq = int(event.get("seq", 0))
            if kind == E.CHUNK and seq == self._seq + 1:
                self._text += str(event.get("text", ""))
            elif kind == E.PARTIAL and seq > self._seq:
                self._text = str(event.get("text", ""))
            else:
                self.behind = kind == E.CHUNK and seq > self._seq and seq % K.PARTIAL_EVERY == 0
                return ""
            self._seq = seq
            return self._take()
        if kind == "reply":
            self.done = True
            full = str(event.get("text", ""))
            self._text = full if full.startswith(self._text) else self._text
            return self._take()
        if kind in ("cancelled", "turn_error"):
            self.done = True
            return FAILED_TEXT if kind == "turn_error" else ""
        return ""

    def _on_tool(self, kind: str, call_id: str, now: float) -> None:
        if kind == E.TOOL_RESULT:
            self.tools.discard(call_id)
            return
        if not self.tools:
            self._tool_since, self._noticed = now, False
        self.tools.add(call_id)

    def notice_in(self, now: float, after_s: float) -> float | None:
        """Seconds until the caller should hear :data:`TOOL_NOTICE` (a tool has been running
        ``after_s``), or None: no tool running, already said, or notices off (0)."""
        if not self.tools or self._noticed or after_s <= 0 or self.done:
            return None
        return max(0.0, self._tool_since + after_s - now)

    def notice(self) -> str:
        self._noticed = True
        return TOOL_NOTICE

    def _take(self) -> str:
        start = max(self._pos, self._skip)
        out = self._text[start:]
        self._pos = max(self._pos, len(self._text))
        self.spoken += len(out)
        return out
