"""Unit tests for sessions/demo.py: the arithmetic evaluator and the demo model's planning."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agents.tool import DEFAULT_APPROVAL_REJECTION_MESSAGE
from openai.types.responses import ResponseFunctionToolCall

from sessions.demo import (
    DEMO_NOTE,
    DemoModel,
    booking_arguments,
    demo_agent,
    safe_eval,
    triage_agent,
)
from sessions.runtime import parse_arguments


@pytest.mark.parametrize(("expr", "value"), [
    ("6 * 7", 42.0),
    ("1 + 2 * 3", 7.0),
    ("(1 + 2) * 3", 9.0),
    ("10 / 4", 2.5),
    ("-3 - -2", -1.0),
    ("1.5 * 2", 3.0),
    ("7", 7.0),
])
def test_safe_eval_arithmetic(expr: str, value: float) -> None:
    got = safe_eval(expr)
    assert got == value
    assert isinstance(got, float)


@pytest.mark.parametrize("expr", [
    "x",
    "x + 1",
    "abs(-1)",
    "__import__('os')",
    "print(1)",
    "(1).real",
    "'a' * 3",
    "2 ** 10",
    "7 % 3",
    "[1, 2]",
    "1 if 1 else 2",
    "lambda: 1",
])
def test_safe_eval_rejects(expr: str) -> None:
    with pytest.raises(ValueError, match="unsupported expression"):
        safe_eval(expr)


def test_safe_eval_syntax_and_zero_division() -> None:
    with pytest.raises(SyntaxError):
        safe_eval("1 +")
    with pytest.raises(ZeroDivisionError):
        safe_eval("1 / 0")


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


@pytest.fixture
def model() -> DemoModel:
    return DemoModel(word_delay=0)


def test_plan_time_tool_call(model: DemoModel) -> None:
    step = model.plan([user("what time is it")])
    assert isinstance(step, ResponseFunctionToolCall)
    assert step.name == "current_time"
    assert step.type == "function_call"
    assert json.loads(step.arguments) == {}


def test_plan_calculate_tool_call(model: DemoModel) -> None:
    step = model.plan([user("what is 6 * 7")])
    assert isinstance(step, ResponseFunctionToolCall)
    assert step.name == "calculate"
    args = json.loads(step.arguments)
    assert args == {"expression": "6 * 7"}
    assert safe_eval(args["expression"]) == 42.0


def test_plan_uses_latest_user_message(model: DemoModel) -> None:
    step = model.plan([user("what is 6 * 7"), {"role": "assistant", "content": "42"},
                       user("what time is it")])
    assert isinstance(step, ResponseFunctionToolCall)
    assert step.name == "current_time"


def test_plan_reads_content_parts(model: DemoModel) -> None:
    item = {"role": "user", "content": [{"type": "input_text", "text": "what is 2 + 3"}]}
    step = model.plan([item])
    assert isinstance(step, ResponseFunctionToolCall)
    assert json.loads(step.arguments) == {"expression": "2 + 3"}


def test_plan_text_after_tool_output(model: DemoModel) -> None:
    items = [
        user("what is 6 * 7"),
        {"type": "function_call", "name": "calculate", "call_id": "call_calc",
         "arguments": '{"expression": "6 * 7"}'},
        {"type": "function_call_output", "call_id": "call_calc", "output": "42"},
    ]
    step = model.plan(items)
    assert isinstance(step, str)
    assert "42" in step
    assert DEMO_NOTE in step


def test_plan_recalls_previous_user_message(model: DemoModel) -> None:
    items = [
        user("my cat is called Tom"),
        {"role": "assistant", "content": [{"type": "output_text", "text": "nice"}]},
        user("what did I say"),
    ]
    step = model.plan(items)
    assert isinstance(step, str)
    assert "my cat is called Tom" in step
    assert DEMO_NOTE in step


def test_plan_recalls_from_the_end_of_a_long_memory(model: DemoModel) -> None:
    """The last note and the user's message before the last, in a full memory (the plan
    looks from the end, sessions/demo.py ``_last``)."""
    items: list[Any] = []
    for n in range(100):
        items += [user(f"message {n}"), {"role": "system", "content": f"note {n}"}]
    operator = model.plan([*items, user("what did the operator say")])
    assert isinstance(operator, str) and "The operator said: 'note 99'" in operator
    recall = model.plan([*items, user("what did I say")])
    assert isinstance(recall, str) and "Before this you said: 'message 99'" in recall
    assert "The operator said" not in model.plan([user("what did the operator say")])


def test_plan_recall_without_history_echoes(model: DemoModel) -> None:
    step = model.plan([user("What did I say?")])
    assert isinstance(step, str)
    assert "Before this you said" not in step
    assert "What did I say?" in step


def test_plan_plain_echo(model: DemoModel) -> None:
    step = model.plan([user("hello there")])
    assert isinstance(step, str)
    assert "hello there" in step
    assert DEMO_NOTE in step


def test_plan_empty_conversation(model: DemoModel) -> None:
    step = model.plan([])
    assert isinstance(step, str)
    assert DEMO_NOTE in step


@pytest.mark.parametrize(("said", "args"), [
    ("book a table for two at seven", {"people": 2, "time": "7:00"}),
    ("Please book a table for 4 at 19:30", {"people": 4, "time": "19:30"}),
    ("book me a table", {"people": 2, "time": "19:00"}),
])
def test_plan_books_a_table(model: DemoModel, said: str, args: dict[str, Any]) -> None:
    step = model.plan([user(said)])
    assert isinstance(step, ResponseFunctionToolCall) and step.name == "book_table"
    assert json.loads(step.arguments) == args
    assert booking_arguments(said) == args


def test_plan_says_whether_the_table_was_booked(model: DemoModel) -> None:
    call = {"type": "function_call", "name": "book_table", "call_id": "c9", "arguments": "{}"}
    booked = model.plan([user("book a table"), call,
                         {"type": "function_call_output", "call_id": "c9",
                          "output": "Booked a table for 2 at 7:00."}])
    refused = model.plan([user("book a table"), call,
                          {"type": "function_call_output", "call_id": "c9",
                           "output": DEFAULT_APPROVAL_REJECTION_MESSAGE}])
    assert isinstance(booked, str) and booked.startswith("Booked a table for 2 at 7:00.")
    assert isinstance(refused, str) and "not booked" in refused


def test_plan_hands_off_unless_greeted(model: DemoModel) -> None:
    step = model.plan([user("what is 6 * 7")], ("transfer_to_agentia_demo",))
    assert isinstance(step, ResponseFunctionToolCall)
    assert (step.name, step.arguments) == ("transfer_to_agentia_demo", "{}")
    greeting = model.plan([user("Hello!")], ("transfer_to_agentia_demo",))
    assert isinstance(greeting, str) and "triage" in greeting
    # after the handoff's output, the agent handed to answers from the user's message
    after = model.plan([user("what is 6 * 7"),
                        {"type": "function_call", "name": "transfer_to_agentia_demo",
                         "call_id": "h1", "arguments": "{}"},
                        {"type": "function_call_output", "call_id": "h1", "output": "{}"}])
    assert isinstance(after, ResponseFunctionToolCall) and after.name == "calculate"


def test_call_ids_are_unique(model: DemoModel) -> None:
    a, b = (model.plan([user("what is 1 + 1")]) for _ in range(2))
    assert isinstance(a, ResponseFunctionToolCall) and isinstance(b, ResponseFunctionToolCall)
    assert a.call_id != b.call_id


def test_the_triage_agent_hands_off_to_the_demo_agent() -> None:
    assert triage_agent.handoffs == [demo_agent] and not triage_agent.tools
    assert [t.name for t in demo_agent.tools] == ["current_time", "calculate", "book_table"]
    assert getattr(demo_agent.tools[2], "needs_approval", None) is True


@pytest.mark.parametrize(("raw", "parsed"), [
    ('{"expression": "6 * 7"}', {"expression": "6 * 7"}),
    ("", {}),
    (None, {}),
    ("not json", {"_raw": "not json"}),
    ("[1, 2]", {"_raw": "[1, 2]"}),
    ({"already": "parsed"}, {"already": "parsed"}),
])
def test_tool_arguments_are_a_json_object(raw: Any, parsed: dict[str, Any]) -> None:
    assert parse_arguments(raw) == parsed
