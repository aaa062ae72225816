"""What :meth:`AgentiaClient.stream` yields (one turn's events, typed, each once and in order)
and the iterator :meth:`AgentiaClient.events` returns.

No I/O: the turn's :class:`~agentia_client.pending._Waiter` pushes the turn's events and the
``chunk``/``partial`` frames that change its text; :meth:`_TurnFeed.take` gives them back
as typed classes, skipping what a replay after a gap brings again, until the event that ends
the turn.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from agentia_client.agent_events import (
    AgentState,
    ApprovalRequest,
    ApprovalResult,
    Handoff,
    ToolCall,
    ToolResult,
)
from agentia_client.events import (
    Cancelled,
    Chunk,
    Partial,
    Reply,
    TurnEvent,
    TurnFailure,
    TurnStart,
    UserMessage,
    parse_frame,
)
from agentia_client.values import Event, Reset

_TURN_EVENTS = (UserMessage, TurnStart, ToolCall, ToolResult, AgentState, Handoff,
                ApprovalRequest, ApprovalResult, Reply, Cancelled, TurnFailure)
_ENDS = (Reply, Cancelled, TurnFailure)


class _TurnFeed:
    """The events of one turn waiting to be yielded by :meth:`AgentiaClient.stream`."""

    __slots__ = ("_got", "_last", "ended")

    def __init__(self) -> None:
        self._got: deque[Event] = deque()
        self._last = 0  # after a gap the log is replayed: what was yielded is skipped
        self.ended = False
        """The event that ends the turn was taken: the stream is over."""

    def push(self, ev: Event) -> None:
        """An event of the turn, or a ``chunk``/``partial`` frame that changes its text."""
        self._got.append(ev)

    def take(self) -> TurnEvent | None:
        """The next event to yield; None while there is none (or the turn has ended)."""
        while self._got and not self.ended:
            ev = parse_frame(self._got.popleft())
            if isinstance(ev, Chunk | Partial):
                return ev  # the waiter let only changes of the text through
            if not isinstance(ev, _TURN_EVENTS) or ev.offset <= self._last:
                continue
            self._last = ev.offset
            self.ended = isinstance(ev, _ENDS)
            return ev
        return None


class _EventSource(Protocol):
    async def next_event(self) -> Event | Reset: ...


class _EventIterator:
    """:meth:`AgentiaClient.events`: each item from :meth:`AgentiaClient.next_event`."""

    __slots__ = ("_client",)

    def __init__(self, client: _EventSource) -> None:
        self._client = client

    def __aiter__(self) -> _EventIterator:
        return self

    async def __anext__(self) -> Event | Reset:
        return await self._client.next_event()
