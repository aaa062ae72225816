"""The offline demo model and demo agent: lets ``agentia up`` work with no network or key.

``DemoModel`` is a real Agents SDK ``Model``: it reads the conversation it is given, calls the
demo agent's tools when asked for the time, a sum or a table (the booking needs a person's
approval), hands off when it is offered handoffs and not greeted, and streams its reply word by
word. It is labelled as a demo in every reply so nobody mistakes it for a language model.

Two agents: ``demo_agent`` (the tools) and ``triage_agent`` (no tools; hands off to the demo).
"""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
import operator
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import orjson
from agents import Agent, ModelProvider, ModelSettings, Tool, function_tool
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.models.interface import Model, ModelTracing
from agents.tool import DEFAULT_APPROVAL_REJECTION_MESSAGE
from agents.usage import Usage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
)

from sessions.model_shapes import Shape

DEMO_NOTE = "(demo model: set OPENAI_API_KEY or AGENTIA_MODEL_BASE_URL for a real one)"
_ARITH = re.compile(r"(-?\d+(?:\.\d+)?(?:\s*[-+*/]\s*-?\d+(?:\.\d+)?)+)")
_OPS: dict[type, Any] = {ast.Add: operator.add, ast.Sub: operator.sub,
                         ast.Mult: operator.mul, ast.Div: operator.truediv,
                         ast.USub: operator.neg}
_NUMBERS = {w: n for n, w in enumerate(["zero", "one", "two", "three", "four", "five", "six",
                                         "seven", "eight", "nine", "ten", "eleven", "twelve"])}
_BOOKING = re.compile(r"\bbook\b.*\btable\b", re.I)
_PEOPLE = re.compile(r"\bfor (\w+)", re.I)
_AT = re.compile(r"\bat (\w+)(?::(\d\d))?", re.I)
_GREETING = re.compile(r"^\W*(hello|hi|hey|good (morning|afternoon|evening))\b", re.I)


def safe_eval(expr: str) -> float:
    """Evaluate + - * / on numbers only (no names, no calls)."""
    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return float(_OPS[type(node.op)](ev(node.left), ev(node.right)))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return float(_OPS[type(node.op)](ev(node.operand)))
        raise ValueError(f"unsupported expression: {expr!r}")
    return ev(ast.parse(expr, mode="eval").body)


@function_tool
def current_time() -> str:
    """The current date and time in UTC."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@function_tool
def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression with + - * / and numbers."""
    try:
        value = safe_eval(expression)
    except (ValueError, SyntaxError, ZeroDivisionError) as exc:
        return f"error: {exc}"
    return f"{value:g}"


@function_tool(needs_approval=True)
def book_table(people: int, time: str) -> str:
    """Book a table at the restaurant for ``people`` at ``time`` (a person must approve)."""
    return f"Booked a table for {people} at {time}."


def _count(word: str) -> int | None:
    word = word.lower()
    return int(word) if word.isdigit() else _NUMBERS.get(word)


def booking_arguments(said: str) -> dict[str, Any]:
    """``book a table for two at seven`` → ``{"people": 2, "time": "7:00"}``."""
    people = _count(m.group(1)) if (m := _PEOPLE.search(said)) else None
    time = None
    if (m := _AT.search(said)) and (hour := _count(m.group(1))) is not None:
        time = f"{hour}:{m.group(2) or '00'}"
    return {"people": people or 2, "time": time or "19:00"}


def _call(name: str, arguments: dict[str, Any]) -> ResponseFunctionToolCall:
    token = secrets.token_hex(6)
    return ResponseFunctionToolCall(type="function_call", name=name, call_id=f"call_{token}",
                                    id=f"fc_{token}", arguments=orjson.dumps(arguments).decode())


def _called(items: list[Any], call_id: Any) -> str:
    """The name of the tool a ``function_call_output`` answers."""
    for item in map(_as_dict, items):
        if item.get("type") == "function_call" and item.get("call_id") == call_id:
            return str(item.get("name", ""))
    return ""


def _after_tool(name: str, output: Any) -> str:
    if name == "book_table":
        if str(output).startswith(DEFAULT_APPROVAL_REJECTION_MESSAGE):
            return f"The table was not booked: the booking was not approved. {DEMO_NOTE}"
        return f"{output} {DEMO_NOTE}"
    return f"The tool says: {output}. {DEMO_NOTE}"


def _last(items: list[Any], role: str, nth: int = 1) -> str | None:
    """The text of the ``nth`` last item of ``role`` (None: fewer). From the end: a turn's
    plan looks at the last message or two, and a session's memory holds up to 200 items
    (two whole scans of them a plan: ~2 % of a worker's samples at 1,000 short turns/s)."""
    for item in map(_as_dict, reversed(items)):
        if item.get("role") == role:
            nth -= 1
            if nth == 0:
                return _text_of(item)
    return None


def _text_of(item: Any) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


class DemoModel(Model):
    """Streams a rule-based reply word by word, ``word_delay`` seconds apart."""

    reads_input_only = True
    """It never changes its input's items (``plan`` only reads, :func:`_as_dict` copies what
    is not a dict): the direct path gives it the memory's items, not copies
    (sessions/sdk_history.py)."""

    def __init__(self, word_delay: float = 0.03) -> None:
        self.word_delay = word_delay

    def plan(self, items: list[Any],
             handoffs: tuple[str, ...] = ()) -> ResponseFunctionToolCall | str:
        """Decide the next step from the conversation: a tool call or the reply text.
        ``handoffs`` are the handoff tools offered (``transfer_to_...``): any message but a
        greeting is handed to the first."""
        last = _as_dict(items[-1]) if items else {}
        if last.get("type") == "function_call_output":
            name = _called(items, last.get("call_id"))
            if not name.startswith("transfer_to_"):
                return _after_tool(name, last.get("output"))
        said = _last(items, "user") or ""
        if handoffs and said and not _GREETING.match(said):
            return _call(handoffs[0], {})
        if handoffs:
            return f"Hello! I am the triage agent: ask me anything and I will pass you on. " \
                   f"{DEMO_NOTE}"
        return self._plan_tools(said, items)

    def _plan_tools(self, said: str, items: list[Any]) -> ResponseFunctionToolCall | str:
        if _BOOKING.search(said):
            return _call("book_table", booking_arguments(said))
        if "time" in said.lower():
            return _call("current_time", {})
        if m := _ARITH.search(said):
            return _call("calculate", {"expression": m.group(1)})
        low = said.lower()
        if "what did the operator say" in low and (
                note := _last(items, "system")) is not None:  # posted messages
            return f"The operator said: {note!r}. {DEMO_NOTE}"
        if "what did i say" in low and (before := _last(items, "user", 2)) is not None:
            return f"Before this you said: {before!r}. {DEMO_NOTE}"
        # as many words as before the booking tool came (loadtest/bench_turnpath.py counts them)
        return (f"You said: {said}. I am a demo agent; I can tell time, do sums, book tables. "
                f"{DEMO_NOTE}")

    async def get_response(self, system_instructions: str | None,
                           input: str | list[TResponseInputItem], model_settings: ModelSettings,
                           tools: list[Tool], output_schema: AgentOutputSchemaBase | None,
                           handoffs: list[Handoff], tracing: ModelTracing, *,
                           previous_response_id: str | None, conversation_id: str | None,
                           prompt: Any) -> ModelResponse:
        step = self.plan(_items(input), _names(handoffs))
        return ModelResponse(output=[_output(step)], usage=Usage(), response_id=None)

    async def stream_response(self, system_instructions: str | None,
                              input: str | list[TResponseInputItem],
                              model_settings: ModelSettings, tools: list[Tool],
                              output_schema: AgentOutputSchemaBase | None,
                              handoffs: list[Handoff], tracing: ModelTracing, *,
                              previous_response_id: str | None, conversation_id: str | None,
                              prompt: Any) -> AsyncIterator[TResponseStreamEvent]:
        step = self.plan(_items(input), _names(handoffs))
        if isinstance(step, str):
            words = step.split(" ")
            delay = self.word_delay
            for n, word in enumerate(words):
                if delay:
                    await asyncio.sleep(delay)
                yield _DELTA.make(delta=word if n == 0 else " " + word, logprobs=[],
                                  sequence_number=n)
        yield _COMPLETED.make(response=_response(step))


def _items(input: str | list[TResponseInputItem]) -> list[Any]:
    """The conversation, only read; an item is looked at through :func:`_as_dict`, and only
    the ones the plan looks at (the last one or two messages): a memory holds up to 200 and
    a list of every item as a dict was ~2 % of a burst worker's samples."""
    if isinstance(input, str):
        return [{"role": "user", "content": input}]
    return input


def _as_dict(item: Any) -> Any:
    """An item as a dict (a dict is not copied)."""
    return item if type(item) is dict else dict(item)


def _names(handoffs: list[Handoff]) -> tuple[str, ...]:
    return tuple(h.tool_name for h in handoffs)


def _output(step: ResponseFunctionToolCall | str) -> Any:
    if isinstance(step, ResponseFunctionToolCall):
        return step
    return _MESSAGE.make(content=[_TEXT.make(text=step, annotations=[], logprobs=[])])


def _response(step: ResponseFunctionToolCall | str) -> Response:
    return _RESPONSE.make(output=[_output(step)], tools=[])


# The stream's objects as validation builds them, without running it (sessions/model_shapes.py:
# 31 validations a text reply were 11 % of a burst worker's samples). The examples below are
# the validated objects; every object made differs from its example only in the fields named.
_TEXT = Shape(ResponseOutputText(text="", type="output_text", annotations=[], logprobs=[]),
              ("text", "annotations", "logprobs"))
_MESSAGE = Shape(ResponseOutputMessage(id="msg_demo", type="message", role="assistant",
                                       status="completed", content=[]), ("content",))
_RESPONSE = Shape(Response(id="resp_demo", created_at=0, model="agentia-demo",
                           object="response", output=[], tool_choice="auto", tools=[],
                           top_p=None, parallel_tool_calls=False, status="completed"),
                  ("output", "tools"))
_DELTA = Shape(ResponseTextDeltaEvent(type="response.output_text.delta", item_id="msg_demo",
                                      output_index=0, content_index=0, delta="", logprobs=[],
                                      sequence_number=0),
               ("delta", "logprobs", "sequence_number"))
_COMPLETED = Shape(ResponseCompletedEvent(type="response.completed", response=Response(
    id="", created_at=0, model="", object="response", output=[], tool_choice="auto", tools=[],
    top_p=None, parallel_tool_calls=False), sequence_number=10_000), ("response",))


class DemoProvider(ModelProvider):
    def __init__(self, word_delay: float = 0.03) -> None:
        self.model = DemoModel(word_delay)

    def get_model(self, model_name: str | None) -> Model:
        return self.model


demo_agent = Agent(
    name="Agentia demo",
    instructions="You are a helpful assistant. Use tools for the time, for arithmetic and to "
                 "book a table.",
    tools=[current_time, calculate, book_table],
)

triage_agent = Agent(
    name="Agentia triage",
    instructions="Greet the user; hand everything else to the demo agent.",
    handoffs=[demo_agent],
)
