"""A turn's spans on the edge (docs/operations.md#tracing), made only when
:data:`agentia.tracing.ON` (the node then has a :class:`TracedTurns`, else None and nothing
here runs): ``edge.receive`` around a ``send`` frame (submit and ack, current while the turn
is submitted, so the turn entry carries its ``traceparent``), and ``edge.deliver`` when this
edge delivers the first event of that turn, its first chunk, and its ending event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry.context import Context

from agentia import tracing
from sessions import events as E

MAX_OPEN = 10_000
"""Turns of this edge followed at once; past it the oldest is forgotten (its ending is not
traced): a worker that never answers must not grow the edge."""


def receive_span(session: str, client_id: str) -> Any:
    """``edge.receive`` (a context manager): the ``send`` frame until its ack is written."""
    return tracing.span("edge.receive", {
        "agentia.session": session, "agentia.client_id": client_id}, kind="server")


@dataclass(slots=True)
class _Open:
    ctx: Context
    first: bool = False
    chunk: bool = False


class TracedTurns:
    """The turns this edge received whose ending it has not delivered yet, each with the
    context of its ``edge.receive`` (the parent of its ``edge.deliver`` spans)."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, int], _Open] = {}
        self.sessions: dict[str, int] = {}
        """Open turns per session: an event of another session costs one lookup."""

    def received(self, session: str, turn: int) -> None:
        """The current span (``edge.receive``) accepted ``turn`` of ``session``."""
        if (session, turn) in self.open:  # a duplicate send: the first trace goes on
            return
        if len(self.open) >= MAX_OPEN:
            self._forget(next(iter(self.open)))
        self.open[session, turn] = _Open(tracing.current())
        self.sessions[session] = self.sessions.get(session, 0) + 1

    def delivered(self, session: str, event: bytes, conns: int) -> None:
        """A log event of ``session`` went to its ``conns`` connections here."""
        if session not in self.sessions:
            return
        ev = orjson.loads(event)
        turn = ev.get("turn")
        got = self.open.get((session, turn)) if isinstance(turn, int) else None
        if got is None:
            return
        kind = str(ev.get("type", ""))
        if not got.first:
            got.first = True
            self._deliver(got, kind, "first", conns)
        if kind in E.TURN_ENDS:
            self._deliver(got, kind, "last", conns)
            self._forget((session, turn))

    def chunk(self, session: str, turn: int, conns: int) -> None:
        """A chunk of ``session``'s ``turn`` went to its connections here (the first is
        traced: when the reply's text began to reach the client)."""
        got = self.open.get((session, turn)) if session in self.sessions else None
        if got is not None and not got.chunk:
            got.chunk = True
            self._deliver(got, E.CHUNK, "first_chunk", conns)

    def _deliver(self, got: _Open, kind: str, which: str, conns: int) -> None:
        tracing.record("edge.deliver", tracing.now(), {
            "agentia.event": kind, "agentia.delivery": which, "agentia.connections": conns},
            got.ctx)

    def _forget(self, key: tuple[str, int]) -> None:
        if self.open.pop(key, None) is None:
            return
        left = self.sessions[key[0]] - 1
        if left:
            self.sessions[key[0]] = left
        else:
            del self.sessions[key[0]]
