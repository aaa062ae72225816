"""The OpenAI-compatible stub of the tests: loadtest/openai_stub.py streaming at once, with a
reply that says what it heard (the paid API is out of reach in tests; the OpenAI client, the
Agents SDK and our worker are real)."""

from __future__ import annotations

from typing import Any

import orjson

from loadtest.openai_stub import OpenAIStub, ToolCalls


def heard(messages: list[dict[str, Any]]) -> str:
    users = [m["content"] for m in messages if m.get("role") == "user"]
    return f"stub heard {len(users)} user messages, last: {users[-1]}"


class ChatCompletionsStub(OpenAIStub):
    """Streams ``heard(messages)`` word by word as ``chat.completion.chunk`` SSE events."""

    def __init__(self) -> None:
        super().__init__(heard)


def calls_calculate(messages: list[dict[str, Any]]) -> str | ToolCalls:
    """A model that asks for ``calculate`` on every user message (with its text as the
    expression) and, once the tool answered, says what the tool said."""
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return f"the tool said {last.get('content')}"
    said = str(last.get("content", "")).removeprefix("what is ").strip()
    return ToolCalls([("call_stub_1", "calculate",
                       orjson.dumps({"expression": said}).decode())])


class ToolCallingStub(OpenAIStub):
    """Streams a ``calculate`` tool call, then the text about its output (``calls_calculate``)."""

    def __init__(self) -> None:
        super().__init__(calls_calculate)
