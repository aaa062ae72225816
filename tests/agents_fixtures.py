"""Agents used by the tests (loaded by workers with --agent tests.agents_fixtures:<name>)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent
from agents.items import TResponseStreamEvent

from sessions.demo import DemoModel, calculate, current_time


class FailingModel(DemoModel):
    """Always raises: the turn must end in the dead-letter stream."""

    async def stream_response(self, *args: Any,
                              **kwargs: Any) -> AsyncIterator[TResponseStreamEvent]:
        raise RuntimeError("this model always fails")
        yield  # pragma: no cover


slow = Agent(name="slow", model=DemoModel(word_delay=float(os.environ.get("SLOW_DELAY", "0.15"))),
             tools=[current_time, calculate])
fast = Agent(name="fast", model=DemoModel(word_delay=0.0), tools=[current_time, calculate])
failing = Agent(name="failing", model=FailingModel())


class TaggedModel(DemoModel):
    """The demo model with every reply prefixed ``[<tag>]``: tells which agent ran a turn."""

    def __init__(self, tag: str) -> None:
        super().__init__(word_delay=0.0)
        self.tag = tag

    def plan(self, items: list[Any]) -> Any:
        step = super().plan(items)
        return f"[{self.tag}] {step}" if isinstance(step, str) else step


# two agents of one deployment (tests/e2e/test_agents.py)
alpha = Agent(name="alpha", model=TaggedModel("alpha"), tools=[current_time, calculate])
beta = Agent(name="beta", handoff_description="The second test agent.",
             model=TaggedModel("beta"))
