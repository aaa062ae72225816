"""Running a turn's agent in the worker (a mixin of :class:`sessions.worker.Worker`): from the
turn's text or from the pause an earlier attempt recorded, each stretch between pauses under
what is left of ``turn_timeout_s``, and the pause for a person's approval."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agents import Agent, ModelProvider, RunState
from agents.exceptions import InputGuardrailTripwireTriggered as InputTripped
from agents.exceptions import OutputGuardrailTripwireTriggered as OutputTripped

from agentia import metrics as M
from agentia import tracing
from sessions import turn_spans as TS
from sessions.coalescer import Coalescer
from sessions.duties import Running as _Running
from sessions.memory import Memory
from sessions.pausing import pause_and_wait, restore, resume
from sessions.roles import PauseRecord, Turn, WorkerBus
from sessions.runtime import Paused, agent_name, stream_turn
from sessions.turn_log import TurnEnded, TurnLog, guardrail_error
from sessions.worker_config import WorkerConfig


class TurnProducing:
    """The worker's run of a turn's agent (a mixin of :class:`sessions.worker.Worker`)."""

    bus: WorkerBus
    name: str
    cfg: WorkerConfig
    provider: ModelProvider

    def agent_for(self, turn: Turn) -> tuple[Agent[Any], frozenset[str]]:
        raise NotImplementedError

    async def _produce(self, turn: Turn, co: Coalescer, run: _Running, memory: Memory,
                       record: PauseRecord | None) -> None:
        """Run the turn: from its text, or from the pause an earlier attempt recorded. Each
        stretch between pauses runs under what is left of ``turn_timeout_s``: waiting for
        people does not count."""
        tl = run.log
        assert tl is not None  # set by _attempt
        agent = self.agent_for(turn)[0]
        run_input: str | RunState[Any] = turn.text
        if record is not None:
            run.paused = True
            if record.text:  # the new attempt's run streams the text before the pause again
                co.add(record.text)
            state = await restore(agent, record.state)
            tl.agent = agent_name(agent, state)  # where it paused (after handoffs)
            run_input = await resume(self.bus, turn, run, record, state,
                                     lambda: self._append(turn, tl.waiting()))
        budget = self.cfg.turn_timeout_s
        while True:
            began = time.monotonic()
            try:
                async with asyncio.timeout(budget):
                    paused = await self._stream(agent, tl, run_input, memory)
            except (InputTripped, OutputTripped) as exc:
                raise TurnEnded(guardrail_error(turn.offset, exc)) from None
            budget -= time.monotonic() - began
            if paused is None:
                break
            await memory.save()  # the pause outlives this attempt: memory as it stands
            run_input = await self._on_paused(turn, co, run, paused)
        # the text still waiting goes with the turn's ending (sessions/turn_end.py: one tick)

    async def _stream(self, agent: Agent[Any], tl: TurnLog, run_input: str | RunState[Any],
                      memory: Memory) -> Paused | None:
        """One run of the agent to its end or its pause (returned)."""
        paused = None
        spans = TS.ModelSpans() if tracing.ON else None
        try:
            async for item in stream_turn(agent, run_input, memory, self.provider):
                if spans is not None:
                    spans.add(item)
                if isinstance(item, Paused):
                    paused = item
                else:
                    await tl.add(item)
        finally:
            if spans is not None:
                spans.close()
        return paused

    async def _on_paused(self, turn: Turn, co: Coalescer, run: _Running,
                         paused: Paused) -> RunState[Any]:
        assert run.log is not None
        await co.flush()
        M.TURNS.labels("paused").inc()
        agent, private = self.agent_for(turn)
        return await pause_and_wait(self.bus, agent, self.name, turn, "".join(co.text),
                                    run, paused, self.cfg.approval_timeout_s,
                                    run.log.waiting(), private)

    async def _append(self, turn: Turn, events: list[dict[str, Any]]) -> None:
        if events:
            await self.bus.append(turn.session, events, owner=self.name)
