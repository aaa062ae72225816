"""Agents used by the tests (loaded by workers with --agent tests.agents_fixtures:<name>)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from agents import (
    Agent,
    GuardrailFunctionOutput,
    RunContextWrapper,
    TResponseInputItem,
    input_guardrail,
    output_guardrail,
)
from agents.items import TResponseStreamEvent
from openai.types.responses import ResponseCompletedEvent, ResponseTextDeltaEvent

from sessions.demo import (
    DemoModel,
    _call,
    _response,
    _text_of,
    book_table,
    calculate,
    current_time,
)


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

    def plan(self, items: list[Any], handoffs: tuple[str, ...] = ()) -> Any:
        step = super().plan(items, handoffs)
        return f"[{self.tag}] {step}" if isinstance(step, str) else step


# two agents of one deployment (tests/e2e/test_agents.py)
alpha = Agent(name="alpha", model=TaggedModel("alpha"), tools=[current_time, calculate])
beta = Agent(name="beta", handoff_description="The second test agent.",
             model=TaggedModel("beta"))
triage = Agent(name="triage", model=DemoModel(word_delay=0.0), handoffs=[fast])
"""Hands every message but a greeting to ``fast`` (the demo model's handoff rule)."""


@input_guardrail(name="no_secrets", run_in_parallel=False)
def no_secrets(ctx: RunContextWrapper[Any], agent: Agent[Any],
               input: str | list[TResponseInputItem]) -> GuardrailFunctionOutput:
    """Trips on any message that mentions a password."""
    text = input if isinstance(input, str) else str(input)
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered="password" in text)


@output_guardrail(name="no_answers")
def no_answers(ctx: RunContextWrapper[Any], agent: Agent[Any],
               output: Any) -> GuardrailFunctionOutput:
    """Trips on any reply that gives the answer 42."""
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered="42" in str(output))


guarded = Agent(name="guarded", model=DemoModel(word_delay=0.0), tools=[calculate],
                input_guardrails=[no_secrets], output_guardrails=[no_answers])


class CountingModel(DemoModel):
    """The demo model that appends one line per model call (the last user text) to the file
    ``MODEL_CALLS``: tests count the steps a turn asked of its model."""

    def plan(self, items: list[Any], handoffs: tuple[str, ...] = ()) -> Any:
        path = os.environ.get("MODEL_CALLS")
        if path:
            with open(path, "a") as f:
                f.write(f"{len(items)}\n")
        return super().plan(items, handoffs)


booking = Agent(name="booking", model=CountingModel(word_delay=0.0),
                tools=[current_time, calculate, book_table])


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


class RelayModel(DemoModel):
    """Passes the user's message to the tool ``peer`` (a remote A2A agent, docs/a2a.md) and
    replies with what it answered."""

    def plan(self, items: list[Any], handoffs: tuple[str, ...] = ()) -> Any:
        last = items[-1] if items else {}
        if last.get("type") == "function_call_output":
            return f"The peer says: {last.get('output')}"
        users = [_text_of(i) for i in items if i.get("role") == "user"]
        return _call("peer", {"message": users[-1] if users else ""})


relay = Agent(name="relay", model=RelayModel(word_delay=0.0))
