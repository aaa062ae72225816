"""A turn on the direct path (sessions/direct_run.py) does what the SDK's Runner does with it:
the same items, the same session reads and writes, the same model calls, the same errors.
Every case runs twice on the same scripted model, once each way, and the records are compared."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agents import (
    Agent,
    AgentHooks,
    GuardrailFunctionOutput,
    ModelProvider,
    ModelSettings,
    RunConfig,
    RunContextWrapper,
    Runner,
    function_tool,
    input_guardrail,
    set_tracing_disabled,
)
from agents._tool_identity import resolve_tool_name_collisions
from agents.models.interface import Model
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFailedEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputRefusal,
    ResponseOutputText,
    ResponseTextDeltaEvent,
)

from sessions import direct_run, runtime
from sessions import sdk_speedups as S
from sessions.demo import book_table, calculate
from sessions.runtime import Paused, stream_turn


def setup_module() -> None:
    assert S.install()
    set_tracing_disabled(True)


def _delta(text: str, n: int) -> ResponseTextDeltaEvent:
    return ResponseTextDeltaEvent(type="response.output_text.delta", item_id="m", output_index=0,
                                  content_index=0, delta=text, logprobs=[], sequence_number=n)


def _message(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(id="m", type="message", role="assistant", status="completed",
                                 content=[ResponseOutputText(text=text, type="output_text",
                                                             annotations=[], logprobs=[])])


def _call(name: str, arguments: str, n: int = 1) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(type="function_call", name=name, call_id=f"call_{n}",
                                    id=f"fc_{n}", arguments=arguments)


def _done(*output: Any) -> ResponseCompletedEvent:
    return ResponseCompletedEvent(type="response.completed", sequence_number=99, response=Response(
        id="resp", created_at=0, model="m", object="response", output=list(output),
        tool_choice="auto", tools=[], top_p=None, parallel_tool_calls=False, status="completed"))


def _text(text: str) -> list[Any]:
    words = text.split(" ")
    return [*(_delta(w if i == 0 else " " + w, i) for i, w in enumerate(words)),
            _done(_message(text))]


CURRENT: contextvars.ContextVar[int] = contextvars.ContextVar("current", default=0)


class Scripted(Model):
    """One list of events (or an exception to raise after them) per model call; records the
    arguments of each call."""

    def __init__(self, calls: list[list[Any]], log: list[Any], burst: bool = False) -> None:
        self.calls, self.log = list(calls), log
        self.burst = burst
        """Every event at once (a model that streamed while the turn was busy)."""

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _supports_default_prompt_cache_key(self) -> bool:
        return True  # as the OpenAI models: the Runner adds a key per session

    async def stream_response(self, system_instructions: str | None, input: Any,
                              model_settings: ModelSettings, tools: list[Any],
                              output_schema: Any, handoffs: list[Any], tracing: Any,
                              **kwargs: Any) -> AsyncIterator[Any]:
        self.log.append(("model", system_instructions, [dict(i) for i in input],
                         dataclasses.asdict(model_settings), [t.name for t in tools],
                         output_schema, handoffs, tracing, sorted(kwargs.items())))
        # as the SDK's models do (a span made current while streaming): the stream must end in
        # the context it started in, whichever path takes its events
        token = CURRENT.set(len(self.log))
        try:
            async for event in self._events():
                yield event
        finally:
            CURRENT.reset(token)

    async def _events(self) -> AsyncIterator[Any]:
        for event in self.calls.pop(0):
            # as from a network: the consumer takes each event before the next comes (the
            # Runner, given events faster than it hands them on, drops the ones queued before
            # an error; the direct path gives them all)
            for _ in range(0 if self.burst else 5):
                await asyncio.sleep(0)
            if isinstance(event, Exception):
                raise event
            yield event


class Provider(ModelProvider):
    def __init__(self, model: Model) -> None:
        self.model = model

    def get_model(self, model_name: str | None) -> Model:
        return self.model


class Session:
    """The SDK's Session protocol in memory, recording every call; ``fail`` makes one raise."""

    session_settings = None

    def __init__(self, log: list[Any], fail: str = "") -> None:
        self.session_id, self.items, self.log, self.fail = "s1", [
            {"role": "user", "content": "earlier"}], log, fail
        self.outage = False

    async def get_items(self, limit: int | None = None) -> list[Any]:
        self.log.append(("get", limit))
        if self.fail == "get":
            raise ConnectionError("redis down")
        return list(self.items)

    async def add_items(self, items: list[Any]) -> None:
        self.log.append(("add", items))
        if self.fail == "add":
            raise ConnectionError("redis down")
        self.items.extend(items)

    async def pop_item(self) -> Any:
        return self.items.pop()

    async def clear_session(self) -> None:
        self.items = []


AGENT = Agent(name="t", instructions="be brief", tools=[calculate, book_table])


async def _run(direct: bool, calls: list[list[Any]], agent: Agent[Any] = AGENT,
               fail: str = "", stop_after: int = 0, burst: bool = False) -> list[Any]:
    runtime.DIRECT[0] = direct
    log: list[Any] = []
    got: list[Any] = []
    turn = stream_turn(agent, "what is 2+3", Session(log, fail),  # type: ignore[arg-type]
                       Provider(Scripted(calls, log, burst)))
    try:
        async for item in turn:
            got.append(_plain(item))
            if stop_after and len(got) == stop_after:
                break
    except Exception as exc:
        got.append(("raised", type(exc).__name__, str(exc)))
    finally:
        await turn.aclose()  # type: ignore[attr-defined]
        runtime.DIRECT[0] = True
    return [got, log]


def _plain(item: Any) -> Any:
    if isinstance(item, Paused):
        return ("paused", item.requests)
    return item


CASES = {
    "text": [_text("Five, said the demo.")],
    "tool then text": [[_done(_call("calculate", '{"expression": "2+3"}'))],
                       _text("It is 5.")],
    "text, a tool call mid-stream": [
        [_delta("Let me", 0), _delta(" see.", 1),
         ResponseOutputItemDoneEvent(type="response.output_item.done", output_index=1,
                                     sequence_number=2,
                                     item=_call("calculate", '{"expression": "2+3"}')),
         _done(_message("Let me see."), _call("calculate", '{"expression": "2+3"}'))],
        _text("It is 5.")],
    "approval": [[_done(_call("book_table", '{"people": 2, "time": "7:00"}'))]],
    "refusal": [[_done(ResponseOutputMessage(
        id="m", type="message", role="assistant", status="completed",
        content=[ResponseOutputRefusal(type="refusal", refusal="no")]))]],
    "failed event": [[_delta("Hi", 0), ResponseFailedEvent(
        type="response.failed", sequence_number=1, response=_done().response)]],
    "no output": [[_done()], _text("ok")],
    "model raises first": [[RuntimeError("model down")]],
    "model raises mid-stream": [[_delta("Hi", 0), _delta(" there", 1),
                                 RuntimeError("connection reset")]],
    "stream ends without a response": [[_delta("Hi", 0)]],
}


@pytest.mark.parametrize("case", list(CASES))
async def test_both_paths_do_the_same(case: str) -> None:
    direct, runner = await _run(True, CASES[case]), await _run(False, CASES[case])
    assert direct == runner
    assert direct[0] or case == "no output", "the case yields or raises something"


@pytest.mark.parametrize("fail", ["get", "add"])
async def test_a_session_failure_is_the_same(fail: str) -> None:
    direct, runner = await _run(True, CASES["text"], fail=fail), \
        await _run(False, CASES["text"], fail=fail)
    assert direct == runner and direct[0][-1][0] == "raised"


async def test_a_turn_stopped_mid_reply_leaves_the_same_session() -> None:
    """A cancelled turn (the worker stops reading): the user's input was saved, the reply not."""
    calls = [_text("one two three four")]
    direct, runner = await _run(True, calls, stop_after=2), await _run(False, calls, stop_after=2)
    assert direct == runner and len(direct[0]) == 2
    assert [e[0] for e in direct[1]] == ["get", "model", "add"] or \
        [e[0] for e in direct[1]] == ["get", "add", "model"]


async def test_a_text_reply_takes_the_direct_path() -> None:
    """The direct path is taken (not the Runner behind it): no Runner run for a text reply."""
    calls: list[Any] = []

    def no_runner(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise AssertionError("the Runner ran")

    original = Runner.run_streamed
    Runner.run_streamed = no_runner  # type: ignore[method-assign]
    try:
        got, _ = await _run(True, CASES["text"])
    finally:
        Runner.run_streamed = original  # type: ignore[method-assign]
    assert not calls and "".join(d.text for d in got) == "Five, said the demo."


@input_guardrail
async def _guard(ctx: Any, agent: Any, input: Any) -> GuardrailFunctionOutput:
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered=False)


@pytest.mark.parametrize("agent", [
    AGENT.clone(handoffs=[Agent(name="other")]),
    AGENT.clone(input_guardrails=[_guard]),
    AGENT.clone(output_type=int),
    AGENT.clone(hooks=AgentHooks()),
    AGENT.clone(model=Scripted([], [])),
    AGENT.clone(model_settings=ModelSettings(timeout=5)),
    AGENT.clone(instructions=lambda ctx, agent: "dynamic"),
    AGENT.clone(tools=[function_tool(lambda: "x", name_override="maybe",
                                     is_enabled=lambda ctx, agent: True)]),
], ids=["handoffs", "guardrail", "structured", "hooks", "model object", "timeout",
        "dynamic instructions", "dynamic is_enabled"])
def test_what_the_direct_path_does_not_serve_goes_to_the_runner(agent: Agent[Any]) -> None:
    cfg = RunConfig(model_provider=Provider(Scripted([], [])))
    assert direct_run.eligible(AGENT, cfg)
    assert not direct_run.eligible(agent, cfg)


def test_sdk_tracing_on_goes_to_the_runner() -> None:
    cfg = RunConfig(model_provider=Provider(Scripted([], [])))
    set_tracing_disabled(False)
    try:
        assert not direct_run.eligible(AGENT, cfg)
    finally:
        set_tracing_disabled(True)


def _joined(items: list[Any]) -> list[Any]:
    """The items with each run of text pieces joined into one."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, runtime.Delta) and out and isinstance(out[-1], runtime.Delta):
            out[-1] = runtime.Delta(out[-1].text + item.text)
        else:
            out.append(item)
    return out


@pytest.mark.parametrize("case", ["text", "tool then text", "text, a tool call mid-stream"])
async def test_a_burst_of_text_is_given_in_one_piece(case: str) -> None:
    """Text deltas that came while the turn was busy are one piece on the direct path (the
    Runner gives one per event): the same text, items, session and model calls, and the
    Runner that takes over after a burst skips exactly the text given."""
    direct = await _run(True, CASES[case], burst=True)
    runner = await _run(False, CASES[case], burst=True)
    assert _joined(direct[0]) == _joined(runner[0]) and direct[1] == runner[1]
    pieces = [i for i in direct[0] if isinstance(i, runtime.Delta)]
    events = [i for i in runner[0] if isinstance(i, runtime.Delta)]
    # the direct path's text in one piece, what the Runner streams after a tool call one a delta
    assert (len(pieces), len(events)) == {"text": (1, 4), "tool then text": (3, 3),
                                          "text, a tool call mid-stream": (4, 5)}[case]


async def test_the_model_tools_are_worked_out_again_when_the_agent_changes() -> None:
    """The model's tools are kept per agent while its tools and their ``is_enabled`` are the
    same: a change to either is seen at the next run."""
    one = function_tool(lambda: "a", name_override="one")
    two = function_tool(lambda: "b", name_override="two")
    agent = Agent(name="kept", tools=[one, two])
    ctx = RunContextWrapper[Any](context=None)

    async def names() -> list[str]:
        tools = await direct_run.model_tools(agent, lambda: ctx, "error")
        sdk, _ = resolve_tool_name_collisions(await agent.get_all_tools(ctx), [],
                                              collision_policy="error")
        assert [t.name for t in tools] == [t.name for t in sdk]
        return [t.name for t in tools]

    assert await names() == ["one", "two"]
    first = await direct_run.model_tools(agent, lambda: ctx, "error")
    again = await direct_run.model_tools(agent, lambda: ctx, "error")
    assert again is not first and all(a is b for a, b in zip(again, first, strict=True))
    one.is_enabled = False
    assert await names() == ["two"]
    agent.tools = [two, one, function_tool(lambda: "c", name_override="three")]
    assert await names() == ["two", "three"]
    one.is_enabled = True
    assert await names() == ["two", "one", "three"]
