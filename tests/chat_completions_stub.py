"""The OpenAI-compatible stub of the tests: loadtest/openai_stub.py streaming at once, with a
reply that says what it heard (the paid API is out of reach in tests; the OpenAI client, the
Agents SDK and our worker are real)."""

from __future__ import annotations

from typing import Any

from loadtest.openai_stub import OpenAIStub


def heard(messages: list[dict[str, Any]]) -> str:
    users = [m["content"] for m in messages if m.get("role") == "user"]
    return f"stub heard {len(users)} user messages, last: {users[-1]}"


class ChatCompletionsStub(OpenAIStub):
    """Streams ``heard(messages)`` word by word as ``chat.completion.chunk`` SSE events."""

    def __init__(self) -> None:
        super().__init__(heard)

