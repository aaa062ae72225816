"""The lean model's request without the OpenAI client's walk of its arguments
(sessions/lean_model.py ``untransformed``): the same body, headers and query as the client's
own ``create`` sends, or the arguments left as they are when they are not plain JSON."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import orjson
import pytest
from openai import omit
from openai.types.chat import ChatCompletionMessageParam

from sessions.lean_model import untransformed

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "what is 2+3 and the weather in Paris? \u00e9\U0001f600"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "calculate", "arguments": '{"expression": "2+3"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "5"},
    {"role": "user", "content": [{"type": "text", "text": "and in Rome?"}]},
]
TOOLS = [{"type": "function", "function": {
    "name": "calculate", "description": "d", "strict": False,
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                   "required": ["expression"], "additionalProperties": False}}}]


def sdk_kwargs(**over: Any) -> dict[str, Any]:
    """What the SDK's chat completions model passes (openai_chatcompletions.py)."""
    kwargs: dict[str, Any] = {
        "model": "gpt-4o-mini", "messages": MESSAGES, "tools": TOOLS, "temperature": 0.3,
        "top_p": omit, "frequency_penalty": omit, "presence_penalty": omit, "max_tokens": 50,
        "tool_choice": omit, "response_format": omit, "parallel_tool_calls": omit,
        "stream": True, "stream_options": {"include_usage": True}, "store": omit,
        "reasoning_effort": omit, "verbosity": omit, "top_logprobs": omit,
        "prompt_cache_retention": omit, "prompt_cache_options": omit,
        "extra_headers": {"User-Agent": "Agents/Python 0", "X-Test": "1"},
        "extra_query": None, "extra_body": None, "metadata": omit}
    return {**kwargs, **over}


async def sent(kwargs: dict[str, Any]) -> httpx2.Request:
    got: list[httpx2.Request] = []

    def handle(request: httpx2.Request) -> httpx2.Response:
        got.append(request)
        return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                               content=b"data: [DONE]\n\n")
    client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://stub/v1", max_retries=0,
                                http_client=httpx2.AsyncClient(
                                    transport=httpx2.MockTransport(handle)))
    async with client.chat.completions.with_streaming_response.create(**kwargs) as r:
        await r.read()
    return got[0]


CASES: dict[str, dict[str, Any]] = {
    "the SDK's usual call": {},
    "extra_body and extra_query": {"extra_body": {"top_k": 3, "max_tokens": 9},
                                   "extra_query": {"q": "1"}},
    "a response format and tool choice": {
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        "tool_choice": {"type": "function", "function": {"name": "calculate"}}},
}


@pytest.mark.parametrize("name", list(CASES))
async def test_the_request_is_the_clients_own(name: str) -> None:
    kwargs = sdk_kwargs(**CASES[name])
    moved = untransformed(kwargs)
    assert moved is not kwargs and moved["messages"] == [], "the walk is skipped"
    own, lean = await sent(kwargs), await sent(moved)
    assert orjson.loads(lean.content) == orjson.loads(own.content)
    assert lean.url == own.url
    drop = {"content-length", "x-stainless-retry-count", "x-stainless-read-timeout"}
    assert {k: v for k, v in lean.headers.items() if k not in drop} == \
        {k: v for k, v in own.headers.items() if k not in drop}


class Part(openai.BaseModel):
    type: str = "text"
    text: str = "hi"


@pytest.mark.parametrize("odd", [
    {"messages": [{"role": "user", "content": [Part()]}]},  # a pydantic model in the body
    {"messages": ({"role": "user", "content": "hi"},)},     # a tuple (the client lists it)
    {"model": omit},
])
def test_anything_but_plain_json_goes_the_clients_way(odd: dict[str, Any]) -> None:
    kwargs = sdk_kwargs(**odd)
    assert untransformed(kwargs) is kwargs


def test_a_deep_body_goes_the_clients_way() -> None:
    deep: dict[str, Any] = {}
    for _ in range(100):
        deep = {"a": deep}
    kwargs = sdk_kwargs(extra_body=None, metadata=deep)
    assert untransformed(kwargs) is kwargs
