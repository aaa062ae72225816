"""Agents used by the tests (loaded by workers with --agent tests.agents_fixtures:<name>)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent
from agents.items import TResponseStreamEvent
from openai.types.responses import ResponseCompletedEvent, ResponseTextDeltaEvent

from sessions.demo import DemoModel, _response, calculate, current_time


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


class PausingModel(DemoModel):
    """Asked for a story: one short sentence, then nothing for ``PAUSE_S`` seconds while the
    reply is still running, then the end (the agent is silent mid-reply). Else the demo's."""

    async def stream_response(self, *args: Any,
                              **kwargs: Any) -> AsyncIterator[TResponseStreamEvent]:
        said = str(_items_text(args[1] if len(args) > 1 else kwargs.get("input", "")))
        if "story" not in said.lower():
            async for event in super().stream_response(*args, **kwargs):
                yield event
            return
        pause = float(os.environ.get("PAUSE_S", "15"))
        # the next sentence's start comes before the pause: livekit-agents' sentence tokenizer
        # holds a sentence until 10 characters of the next one are there
        for n, text in enumerate(("Once upon a time there was a calm sea. Then one day",
                                  " a storm came. The end.")):
            if n:
                await asyncio.sleep(pause)
            yield ResponseTextDeltaEvent(
                type="response.output_text.delta", item_id="msg_demo", output_index=0,
                content_index=0, delta=text, logprobs=[], sequence_number=n)
        yield ResponseCompletedEvent(
            type="response.completed", sequence_number=10_000,
            response=_response("Once upon a time there was a calm sea. Then one day a "
                                                 "storm came. The end."))


def _items_text(input: Any) -> str:
    """The newest user message of the model's input."""
    if isinstance(input, str):
        return input
    users = [dict(i) for i in input if dict(i).get("role") == "user"]
    return str(users[-1].get("content", "")) if users else ""


pausing = Agent(name="pausing", model=PausingModel(word_delay=0.0),
                tools=[current_time, calculate])
