"""A turn's spans in the worker (docs/operations.md#tracing), made only when
:data:`agentia.tracing.ON`: ``worker.turn`` (a child of the submitter's span, whose
``traceparent`` the turn entry carries), and under it ``worker.claim``, ``worker.model``,
``worker.tool`` and ``worker.reply``.

Model and tool spans are made from the items :func:`sessions.runtime.stream_turn` yields, not
by bridging the Agents SDK's own tracing: that stays off (it exports to OpenAI, and turning it
on runs its trace machinery on every event of every run), and the items already mark where a
model call ends (a tool is called, or the run ends) and where the next one starts (the last
pending tool returned).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import Span

from agentia import tracing
from sessions import events as E
from sessions.roles import Claimed, Started, Turn
from sessions.runtime import ToolCalled, ToolOutput


def turn_span(turn: Turn, claim: Claimed, worker: str) -> Any:
    """``worker.turn`` (a context manager): one attempt of ``turn``, current while inside."""
    return tracing.span("worker.turn", {
        "agentia.session": turn.session, "agentia.turn": turn.offset,
        "agentia.agent": turn.agent, "agentia.source": turn.source, "agentia.worker": worker,
        "agentia.entry": claim.id.decode(), "agentia.reclaimed": claim.reclaimed},
        tracing.parent(turn.tp), "consumer")


def claimed(began_ns: int, started: Started) -> None:
    """``worker.claim``: the attempt counted and its ``turn_start`` written (START)."""
    tracing.record("worker.claim", began_ns, {
        "agentia.attempt": started.attempt, "agentia.cancelled": started.cancelled,
        "agentia.held": started.held, "agentia.run": started.run})


def replied(began_ns: int, event: E.Event | list[E.Event]) -> None:
    """``worker.reply``: the turn's ending event appended (reply, cancelled, turn_error)."""
    last = event[-1] if isinstance(event, list) else event
    kind = str(last.get("type", ""))
    tracing.record("worker.reply", began_ns, {"agentia.event": kind},
                   error=str(last.get("code", "")) if kind == E.TURN_ERROR else "")


class ModelSpans:
    """The model calls and tool calls of one run of the agent, from its items."""

    def __init__(self) -> None:
        self.calls = 0
        self.model: Span | None = None
        self.tools: dict[str, Span] = {}
        self._call_model()

    def _call_model(self) -> None:
        self.calls += 1
        self.model = tracing.start("worker.model", {"agentia.model_call": self.calls})

    def add(self, item: object) -> None:
        if isinstance(item, ToolCalled):
            if self.model is not None:
                self.model.end()
                self.model = None
            self.tools[item.call_id] = tracing.start("worker.tool", {
                "agentia.tool": item.name, "agentia.call_id": item.call_id,
                "agentia.agent": item.agent})
        elif isinstance(item, ToolOutput):
            tool = self.tools.pop(item.call_id, None)
            if tool is not None:
                if item.is_error:
                    tracing.fail(tool, "the tool failed")
                tool.end()
            if not self.tools and self.model is None:  # the model reads the tools' outputs
                self._call_model()

    def close(self, error: BaseException | None = None) -> None:
        """The run ended (or paused, or failed with ``error``)."""
        for s in [*self.tools.values(), *([self.model] if self.model else [])]:
            if error is not None:
                tracing.fail(s, repr(error))
            s.end()
        self.tools.clear()
        self.model = None
