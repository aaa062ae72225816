"""What one attempt of a turn writes to the session log as the agent works (docs/protocol.md §5):
``state`` changes, ``tool_call``/``tool_result``, ``handoff``, and the ``agent`` of its ending.

Cost rule (issue 13): a state change rides on an append the turn makes anyway. ``thinking`` is
appended by the attempt's START script with its ``turn_start`` (:func:`started`), ``tool`` with
the ``tool_call`` it belongs to, and ``idle`` with the turn's ending event
(:meth:`TurnLog.ending`), each one script. Only ``speaking`` (before the first text after another
state) is an append of its own: no log event is due then; it rides on the tick that carries the
text (log_redis ``append(later=True)``: on a single Redis the append itself, in the tick's
pipeline, sessions/deferred_appends.py; else its delivery to the nodes). A ``tool_result`` or a
``handoff`` changes no state (the next ``tool``/``speaking`` says what comes, with the agent
doing it).
"""

from __future__ import annotations

from typing import Any

from agents.exceptions import InputGuardrailTripwireTriggered as InputTripped
from agents.exceptions import OutputGuardrailTripwireTriggered as OutputTripped

from agentia.codes import ErrorCode
from sessions import events as E
from sessions.bus import Turn
from sessions.coalescer import Coalescer
from sessions.roles import WorkerBus
from sessions.runtime import AgentSwitched, Delta, ToolCalled, ToolOutput

THINKING, TOOL, SPEAKING, IDLE = "thinking", "tool", "speaking", "idle"


def started(turn: Turn, agent: str) -> list[E.Event]:
    """The events an attempt's START script appends after its ``turn_start``."""
    return [E.state(turn.offset, THINKING, agent)]


class TurnLog:
    """The log side of one running attempt. ``private`` names tools whose arguments and output
    stay in the worker (their events carry the name and ``private: true``)."""

    def __init__(self, bus: WorkerBus, turn: Turn, owner: str, co: Coalescer, agent: str,
                 private: frozenset[str] = frozenset()) -> None:
        self.bus, self.turn, self.owner, self.co = bus, turn, owner, co
        self.agent = agent
        """The agent producing the turn now (the last one after handoffs)."""
        self.private = private
        self.state = THINKING

    async def add(self, item: Delta | ToolCalled | ToolOutput | AgentSwitched) -> None:
        """Record one item of the run (text goes to the coalescer, the rest to the log)."""
        if isinstance(item, Delta):
            if self.state != SPEAKING:
                # no flush: text waits only while speaking, and every other event flushed it
                # (flushing here would send every turn's pieces once per turn, not per tick);
                # the nodes get it with the text's tick (``later``: one round trip fewer)
                await self.bus.append(self.turn.session, self._to(SPEAKING), owner=self.owner,
                                      later=True)
            self.co.add(item.text)
        elif isinstance(item, ToolCalled):
            self.agent = item.agent
            private = item.name in self.private
            await self._append([*self._to(TOOL), E.tool_call(
                self.turn.offset, item.call_id, item.name, item.arguments, item.agent, private)])
        elif isinstance(item, ToolOutput):
            private = item.name in self.private
            await self._append([E.tool_result(self.turn.offset, item.call_id, item.name,
                                              item.output, item.is_error, private)])
        else:
            self.agent = item.to_agent
            self.state = ""  # the new agent's next state is written, even if it is the same
            await self._append([E.handoff(self.turn.offset, item.from_agent, item.to_agent)])

    def waiting(self) -> list[E.Event]:
        """The run waits for people to approve tool calls (sessions/pausing.py): ``state
        idle``, appended with the ``approval_request`` events (empty when idle already)."""
        return self._to(IDLE)

    def ending(self, event: E.Event) -> list[E.Event]:
        """The turn's ending event, after its ``state idle`` (one append)."""
        return ending(self.turn, event, self.agent)

    def _to(self, state: str) -> list[E.Event]:
        if state == self.state:
            return []
        self.state = state
        return [E.state(self.turn.offset, state, self.agent)]

    async def _append(self, events: list[dict[str, Any]], flush: bool = True) -> None:
        # the text streamed so far reaches Redis before the event: order holds for clients
        if flush:
            await self.co.flush()
        await self.bus.append(self.turn.session, events, owner=self.owner)


def ending(turn: Turn, event: E.Event, agent: str) -> list[E.Event]:
    """Any ending of a turn (reply, cancelled, turn_error) goes with ``state idle`` before it:
    the ending stays the turn's last event."""
    return [E.state(turn.offset, IDLE, agent), event]


class TurnEnded(Exception):
    """Raised inside a running turn to end it with ``event`` (a ``turn_error``) at once: no
    retry, no reply."""

    def __init__(self, event: dict[str, Any]) -> None:
        super().__init__(event.get("message", ""))
        self.event = event


def guardrail_error(turn: int, exc: InputTripped | OutputTripped) -> dict[str, Any]:
    """The ``turn_error`` of a tripped guardrail: its kind and name, never the model's text."""
    kind = "input" if isinstance(exc, InputTripped) else "output"
    name = exc.guardrail_result.guardrail.get_name()
    return E.turn_error(turn, str(ErrorCode.GUARDRAIL), f"the {kind} guardrail {name} tripped")
