"""The lean Chat Completions stream (sessions/lean_model.py) gives the Agents SDK's events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
import orjson
import pydantic
import pytest
from agents import ModelSettings
from agents.models.interface import ModelTracing
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import ChoiceDelta

from agentia.settings import SettingsError, WorkerSettings, from_env
from sessions.lean_model import LeanChatModel, LeanProvider, SSEDecoder, build, merge_text
from sessions.runtime import ModelConfig, model_provider


def sse(delta: dict[str, Any] | None = None, finish: str | None = None,
        usage: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "created": 0,
                            "model": "m", "choices": []}
    if delta is not None:
        body["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    if usage is not None:
        body["usage"] = usage
    return b"data: " + orjson.dumps(body) + b"\n\n"


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
         "prompt_tokens_details": {"cached_tokens": 2},
         "completion_tokens_details": {"reasoning_tokens": 0}}
DONE = b"data: [DONE]\n\n"
TEXT = [sse({"role": "assistant", "content": ""}), sse({"content": "Hello"}),
        sse({"content": ", "}), sse({"content": "world"}), sse({}, "stop"),
        sse(usage=USAGE), DONE]
TOOL = [sse({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                  "function": {"name": "calc", "arguments": ""}}]}),
        sse({"tool_calls": [{"index": 0, "function": {"arguments": '{"expr'}}]}),
        sse({"tool_calls": [{"index": 0, "function": {"arguments": 'ession": "1+1"}'}}]}),
        sse({}, "tool_calls"), sse(usage=USAGE), DONE]
REFUSAL = [sse({"role": "assistant", "refusal": "I can"}), sse({"refusal": "not."}),
           sse({}, "stop"), DONE]
MIXED = [sse({"role": "assistant", "content": "Let me check."}),
         sse({"tool_calls": [{"index": 0, "id": "call_2", "type": "function",
                              "function": {"name": "calc", "arguments": "{}"}}]}),
         sse({}, "tool_calls"), DONE]


def client(reads: list[bytes], status: int = 200, sent: list[httpx2.Request] | None = None,
           base_url: str = "http://stub/v1") -> openai.AsyncOpenAI:
    """A real OpenAI client whose HTTP answers with ``reads``, one read each (the requests
    it sends are appended to ``sent``)."""
    async def body() -> AsyncIterator[bytes]:
        for r in reads:
            yield r

    def handle(request: httpx2.Request) -> httpx2.Response:
        if sent is not None:
            sent.append(request)
        return httpx2.Response(status, headers={"content-type": "text/event-stream",
                                                "x-request-id": "req_1"}, content=body())

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handle))
    return openai.AsyncOpenAI(api_key="sk-test", base_url=base_url, http_client=http,
                              max_retries=0)


async def events(model: Any) -> list[dict[str, Any]]:
    out = []
    async for e in model.stream_response(None, "hi", ModelSettings(), [], None, [],
                                          ModelTracing.DISABLED):
        dumped = e.model_dump()
        if "response" in dumped:
            dumped["response"].pop("created_at")
        out.append(dumped)
    return out


@pytest.mark.parametrize("reads", [TEXT, TOOL, REFUSAL, MIXED],
                         ids=["text", "tool_call", "refusal", "text_then_tool"])
async def test_events_equal_the_sdk_handlers_read_by_read(reads: list[bytes]) -> None:
    sdk = await events(OpenAIChatCompletionsModel("m", client(reads)))
    lean = await events(LeanChatModel("m", client(reads)))
    assert [e["type"] for e in lean] == [e["type"] for e in sdk]
    assert lean == sdk
    assert sdk[-1]["type"] == "response.completed"


async def test_the_request_is_the_sdks() -> None:
    sdk: list[httpx2.Request] = []
    lean: list[httpx2.Request] = []
    url = "https://api.openai.com/v1"  # the official endpoint: store and include_usage on
    await events(OpenAIChatCompletionsModel("m", client(TEXT, sent=sdk, base_url=url)))
    await events(LeanChatModel("m", client(TEXT, sent=lean, base_url=url)))
    assert len(sdk) == len(lean) == 1
    assert orjson.loads(lean[0].content) == orjson.loads(sdk[0].content)
    assert orjson.loads(lean[0].content)["stream_options"] == {"include_usage": True}
    assert lean[0].url == sdk[0].url


async def test_one_read_merges_text_into_one_delta_with_the_same_response() -> None:
    sdk = await events(OpenAIChatCompletionsModel("m", client([b"".join(TEXT)])))
    lean = await events(LeanChatModel("m", client([b"".join(TEXT)])))
    deltas = [e["delta"] for e in lean if e["type"] == "response.output_text.delta"]
    assert deltas == ["Hello, world"]
    assert len([e for e in sdk if e["type"] == "response.output_text.delta"]) == 3
    assert lean[-1]["response"] == sdk[-1]["response"]  # the completed reply: text, usage
    assert lean[-1]["response"]["usage"]["input_tokens"] == 7


async def test_lines_split_anywhere_and_crlf_give_the_same_events() -> None:
    whole = b"".join(TOOL).replace(b"\n", b"\r\n")
    pieces = [whole[i:i + 7] for i in range(0, len(whole), 7)]
    sdk = await events(OpenAIChatCompletionsModel("m", client(pieces)))
    lean = await events(LeanChatModel("m", client(pieces)))
    assert lean == sdk


async def test_read_every_batches_and_keeps_the_events_content() -> None:
    lean = await events(LeanChatModel("m", client(TEXT), read_every=0.01))
    text = "".join(e["delta"] for e in lean if e["type"] == "response.output_text.delta")
    assert text == "Hello, world" and lean[-1]["type"] == "response.completed"


@pytest.mark.parametrize(("status", "error"), [(429, openai.RateLimitError),
                                               (500, openai.InternalServerError),
                                               (401, openai.AuthenticationError),
                                               (400, openai.BadRequestError)])
async def test_status_errors_are_the_openai_clients(status: int, error: type) -> None:
    body = [b'{"error": {"message": "no", "type": "x"}}']
    with pytest.raises(error):
        await events(LeanChatModel("m", client(body, status)))


async def test_an_error_in_the_stream_raises_api_error() -> None:
    reads = [TEXT[1], b'data: {"error": {"message": "overloaded"}}\n\n']
    with pytest.raises(openai.APIError, match="overloaded"):
        await events(LeanChatModel("m", client(reads)))


def test_decoder_ignores_comments_and_stops_at_done() -> None:
    d = SSEDecoder()
    got = d.feed(b": keepalive\n\nevent: x\n" + TEXT[1] + DONE + TEXT[2])
    assert [b["choices"][0]["delta"] for b in got] == [{"content": "Hello"}]
    assert d.done


def test_unusual_chunks_are_built_by_the_client() -> None:
    logprobs = {"content": [{"token": "a", "logprob": -0.1, "bytes": [97], "top_logprobs": []}]}
    body = orjson.loads(sse({"content": "a"})[6:])
    body["choices"][0]["logprobs"] = logprobs
    [chunk] = merge_text([body])
    assert chunk.choices[0].logprobs is not None
    assert chunk.choices[0].logprobs.content[0].token == "a"  # type: ignore[index]


def test_the_setting_selects_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTIA_MODEL_CLIENT", "lean")
    assert from_env(WorkerSettings).model_client == "lean"
    provider = model_provider(ModelConfig(api_key="sk-test", client="lean"))
    assert isinstance(provider.get_model(None), LeanChatModel)
    assert not isinstance(model_provider(ModelConfig(api_key="sk-test")).get_model(None),
                          LeanChatModel)
    monkeypatch.setenv("AGENTIA_MODEL_CLIENT", "fast")
    with pytest.raises(SettingsError, match="AGENTIA_MODEL_CLIENT"):
        from_env(WorkerSettings).validate()


@pytest.mark.parametrize("reads", [TEXT, TOOL, REFUSAL, MIXED],
                         ids=["text", "tool_call", "refusal", "text_then_tool"])
def test_chunks_equal_the_validated_ones(reads: list[bytes]) -> None:
    bodies = [orjson.loads(r[6:]) for r in reads if r != DONE]
    bodies[0]["provider_field"] = {"kept": True}  # an extra field, as pydantic keeps it
    for body in bodies:
        [chunk] = merge_text([orjson.loads(orjson.dumps(body))])
        valid = ChatCompletionChunk.model_validate(body)
        assert chunk.model_dump() == valid.model_dump()
        assert chunk.model_extra == valid.model_extra
        for mine, theirs in zip(chunk.choices, valid.choices, strict=True):
            assert isinstance(mine.delta, ChoiceDelta)  # PlainDelta: the same fields
            assert mine.delta.__dict__ == theirs.delta.__dict__
            assert mine.delta.model_fields_set == theirs.delta.model_fields_set
            assert getattr(mine.delta, "reasoning_content", None) is None


def test_build_is_model_construct() -> None:
    built = build(ChoiceDelta, content="a", extra_field=1)
    constructed = pydantic.BaseModel.model_construct.__func__(  # type: ignore[attr-defined]
        ChoiceDelta, content="a", extra_field=1)
    assert built == constructed and built.model_fields_set == constructed.model_fields_set
    assert built.role is None and built.model_extra == {"extra_field": 1}


async def test_the_provider_takes_its_clients_in_turn() -> None:
    sent: list[list[httpx2.Request]] = [[], [], []]
    clients = [client([b"".join(TEXT)], sent=s) for s in sent]
    provider = LeanProvider(clients, wire=False)  # over the clients' own (mock) transports
    for _ in range(6):
        got = await events(provider.get_model("m"))
        assert got[-1]["type"] == "response.completed"
    assert [len(s) for s in sent] == [2, 2, 2]


@pytest.mark.parametrize("stream", [TEXT, TOOL, MIXED], ids=["text", "tool_call", "mixed"])
def test_decoder_gives_the_same_objects_however_the_stream_is_cut(stream: list[bytes]) -> None:
    """Whole reads of one-line events take one ``orjson.loads`` for all; any other cut
    goes event by event: both give the same objects, and stop at ``[DONE]``."""
    whole = b"".join(stream) + TEXT[1]  # bytes after [DONE] are not events
    expected = [orjson.loads(r[6:]) for r in stream if r != DONE]
    for cut in range(len(whole) + 1):
        d = SSEDecoder()
        got = d.feed(whole[:cut]) + d.feed(whole[cut:])
        assert got == expected and d.done, cut
    d = SSEDecoder()
    assert [b for n in range(len(whole)) for b in d.feed(whole[n:n + 1])] == expected


def test_an_error_event_in_a_whole_read_raises_api_error() -> None:
    with pytest.raises(openai.APIError, match="overloaded"):
        SSEDecoder().feed(TEXT[1] + b'data: {"error": {"message": "overloaded"}}\n\n')
