"""The worker's SDK speedups (sessions/sdk_speedups.py) give what the SDK's own code gives."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from agents import Agent, handoff
from agents import _run_state_agent_identity as ident
from agents.memory import session as sdk_session
from agents.util import _json
from openai._streaming import ServerSentEvent
from openai.types.chat import ChatCompletionChunk

from sessions import sdk_speedups as S
from sessions.demo import demo_agent
from sessions.model_shapes import plain_model


def setup_module() -> None:
    assert S.install()


def test_dump_compatible_matches_the_sdk() -> None:
    fast, slow = _json._to_dump_compatible_internal, S.ORIGINALS["dump_compatible"]
    assert fast is not slow
    items = [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
             {"type": "function_call", "arguments": "{}", "n": 1.5, "ok": True, "x": None,
              "t": ("a", ("b",)), "s": {3}, "r": range(2)}, "plain", 7]
    assert fast(items) == slow(items)
    assert fast(items)[1]["t"] == ["a", ["b"]]  # tuples become lists, as in the SDK
    chunk = ChatCompletionChunk.model_validate(_chunk({"content": "x"}))
    assert fast([chunk]) == slow([chunk])  # anything else: the SDK's own way


def test_identity_map_matches_the_sdk() -> None:
    fast, slow = ident._build_agent_identity_map, S.ORIGINALS["identity_map"]
    helper = Agent(name="helper", instructions="help")
    root = Agent(name="root", handoffs=[helper, handoff(Agent(name="other"))])
    assert fast(root) == slow(root) and list(fast(root)) == ["root", "helper", "other"]
    twin = Agent(name="helper", instructions="the other helper")
    dup = Agent(name="root", handoffs=[helper, twin])
    assert fast(dup) == slow(dup) and "helper#2" in fast(dup)
    assert fast(demo_agent) == slow(demo_agent)


def test_wrapper_check_matches_the_sdk() -> None:
    class Plain:
        async def get_items(self, limit: int | None = None) -> list[Any]:
            return []

    class Aware:
        async def get_items(self, limit: int | None = None, *, wrapper: Any = None) -> list[Any]:
            return []

    fast, slow = sdk_session._session_method_accepts_wrapper, S.ORIGINALS["accepts_wrapper"]
    for obj in (Plain(), Aware(), Plain()):
        assert fast(obj.get_items) == slow(obj.get_items)
    assert fast(Aware().get_items) and not fast(Plain().get_items)
    assert fast(len) == slow(len)  # not a bound method


def _chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more}


def _sse(body: dict[str, Any] | str) -> bytes:
    data = body if isinstance(body, str) else orjson.dumps(body).decode()
    return f"data: {data}\n\n".encode()


STREAM: list[dict[str, Any] | str] = [
          _chunk({"role": "assistant", "content": "Hi"}), _chunk({"content": " there"}),
          _chunk({"content": ","}), _chunk({"content": " you"}),
          _chunk({"tool_calls": [{"index": 0, "id": "t", "function": {"name": "f"}}]}),
          _chunk({"content": " a"}), _chunk({"content": " b"}), _chunk({}, "stop"), "[DONE]"]


async def _decode(blocks: list[bytes]) -> list[ServerSentEvent]:
    async def feed() -> AsyncIterator[bytes]:
        for b in blocks:
            yield b
    return [sse async for sse in S.MergingSSEDecoder().aiter_bytes(feed())]


def _text(events: list[ServerSentEvent]) -> str:
    return "".join(orjson.loads(e.data)["choices"][0]["delta"].get("content") or ""
                   for e in events if e.data.startswith("{"))


def test_text_chunks_of_one_read_are_merged_in_order() -> None:
    one_read = asyncio.run(_decode([b"".join(_sse(c) for c in STREAM)]))
    each = asyncio.run(_decode([_sse(c) for c in STREAM]))
    assert len(each) == len(STREAM)  # one chunk per read: nothing merged
    # role chunk, " there, you", tool call, " a b", stop, [DONE]
    assert len(one_read) == 6
    assert _text(one_read) == _text(each) == "Hi there, you a b"
    assert orjson.loads(one_read[1].data)["choices"][0]["delta"] == {"content": " there, you"}
    assert "tool_calls" in one_read[2].data and one_read[-1].data == "[DONE]"
    for e in one_read[:-1]:  # every merged chunk is still a valid chunk
        ChatCompletionChunk.model_validate(orjson.loads(e.data))


def test_chunks_with_more_than_text_are_not_merged() -> None:
    usage = _chunk({"content": "a"}, usage={"prompt_tokens": 1})
    logprobs = _chunk({"content": "b"})
    logprobs["choices"][0]["logprobs"] = {"content": []}
    two = {**_chunk({"content": "c"}), "choices": [
        {"index": 0, "delta": {"content": "c"}}, {"index": 1, "delta": {"content": "d"}}]}
    bodies: list[dict[str, Any] | str] = [usage, logprobs, two, "not json", _chunk({})]
    blocks = [b"".join(_sse(c) for c in bodies)]
    assert len(asyncio.run(_decode(blocks))) == 5


def test_chunk_client_validates_chunks_and_falls_back() -> None:
    client = S.ChunkClient(api_key="k", base_url="http://127.0.0.1:9/v1")
    good = _chunk({"content": "x"})
    got = client._process_response_data(data=good, cast_to=ChatCompletionChunk, response=None)
    assert isinstance(got, ChatCompletionChunk) and got.choices[0].delta.content == "x"
    odd = {"choices": [{"index": 0, "delta": {"content": "y"}}]}  # no id, created, model
    got = client._process_response_data(data=odd, cast_to=ChatCompletionChunk, response=None)
    assert got.choices[0].delta.content == "y"  # the client's lenient way, no error


def test_a_run_starts_with_its_own_copy_of_an_agent_without_handoffs() -> None:
    from sessions.runtime import _per_run

    run = _per_run(demo_agent)
    assert run is not demo_agent and run.tools is demo_agent.tools
    assert run.name == demo_agent.name and run.instructions == demo_agent.instructions
    triage = Agent(name="triage", handoffs=[Agent(name="expert")])
    assert _per_run(triage) is triage  # experts may hand back to the original


def _split(splitter: Any, blocks: list[bytes]) -> list[bytes]:
    out = [line for b in blocks for line in splitter.feed(b)]
    return out + list(splitter.finish())


def test_line_splitter_splits_as_the_clients_decoder() -> None:
    """Every way of cutting streams of CR, LF, CRLF and text into reads gives the lines the
    client's own decoder gives."""
    from openai._streaming import _SSELineDecoder

    rng = random.Random(13)
    alphabet = [b"\r", b"\n", b"\r\n", b"a", b"data: {}", b"", b"\xc3\xa9"]
    for _ in range(3000):
        stream = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        cuts = sorted(rng.sample(range(len(stream) + 1), min(len(stream) + 1,
                                                             rng.randint(0, 6))))
        blocks = [stream[i:j] for i, j in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        assert _split(S.LineSplitter(), blocks) == _split(_SSELineDecoder(), blocks), blocks


def test_line_splitter_joins_a_long_line_once() -> None:
    lines = S.LineSplitter()
    assert [lines.feed(b"x" * 10) for _ in range(100)] == [[]] * 100
    assert lines.feed(b"y\r") == [b"x" * 1000 + b"y"]
    assert lines.feed(b"\nz") == [] and lines.finish() == [b"z"] and lines.finish() == []


def test_a_line_over_the_bound_is_an_error_not_unbounded_memory() -> None:
    lines = S.LineSplitter()
    piece = b"x" * (64 * 1024)
    for _ in range(S.MAX_LINE // len(piece)):  # up to the bound: kept
        assert lines.feed(piece) == []
    with pytest.raises(S.LineTooLong):
        lines.feed(b"x")
    fresh = S.LineSplitter()  # a bound per line: many lines of any total are fine
    for _ in range(40):
        assert fresh.feed(piece[:-1] + b"\n") == [piece[:-1]]


async def _paced(blocks: list[bytes], gap: float, read_every: float,
                 fail: Exception | None = None) -> list[tuple[float, ServerSentEvent]]:
    """The events of ``blocks`` given one by one ``gap`` s apart (as the HTTP client gives a
    server's chunks), decoded with ``read_every``, each with when it came out."""
    async def feed() -> AsyncIterator[bytes]:
        for b in blocks:
            yield b
            await asyncio.sleep(gap)
        if fail is not None:
            raise fail
    t0 = asyncio.get_running_loop().time()
    return [(asyncio.get_running_loop().time() - t0, sse)
            async for sse in S.MergingSSEDecoder(read_every).aiter_bytes(feed())]


def test_paced_reads_merge_the_text_that_came_meanwhile() -> None:
    words: list[dict[str, Any] | str] = [
        _chunk({"role": "assistant", "content": "w0"}),
        *(_chunk({"content": f" w{n}"}) for n in range(1, 40)), _chunk({}, "stop"), "[DONE]"]
    blocks = [_sse(c) for c in words]
    each = asyncio.run(_paced(blocks, 0.002, 0.0))
    paced = asyncio.run(_paced(blocks, 0.002, 0.03))
    assert len(each) == len(words)  # one event per chunk of the HTTP client
    assert _text([e for _, e in paced]) == _text([e for _, e in each])
    assert len(paced) < len(words) / 3  # 40 tokens 2 ms apart, a batch every 30 ms
    assert paced[0][0] < 0.02  # the first text is not held back
    assert paced[-1][1].data == "[DONE]"
    for _, e in paced[:-1]:
        ChatCompletionChunk.model_validate(orjson.loads(e.data))


def test_paced_reads_raise_the_streams_error_and_stop_their_reader() -> None:
    blocks = [_sse(_chunk({"content": "a"})), _sse(_chunk({"content": "b"}))]
    with pytest.raises(ConnectionError):
        asyncio.run(_paced(blocks, 0.001, 0.01, fail=ConnectionError("cut")))

    async def leave_early() -> set[asyncio.Task[Any]]:
        async def endless() -> AsyncIterator[bytes]:
            while True:
                yield _sse(_chunk({"content": "x"}))
                await asyncio.sleep(0.001)
        gen = S.MergingSSEDecoder(0.01).aiter_bytes(endless())
        await gen.__anext__()
        await gen.aclose()
        return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert asyncio.run(leave_early()) == set()  # the reader task is gone with the stream


@pytest.mark.parametrize("default_model", [None, "gpt-4.1", "gpt-5"])
def test_model_settings_match_the_sdk(monkeypatch: pytest.MonkeyPatch,
                                      default_model: str | None) -> None:
    from agents import ModelSettings, RunConfig
    from agents.run_internal import turn_preparation as tp

    from sessions.demo import DemoModel

    if default_model is not None:
        monkeypatch.setenv("OPENAI_DEFAULT_MODEL", default_model)
    fast, slow = tp.get_model_settings, S.ORIGINALS["model_settings"]
    assert fast is not slow
    agents = [Agent(name="a"), Agent(name="b", model="gpt-4o-mini"), Agent(name="c", model="gpt-5"),
              Agent(name="d", model_settings=ModelSettings(temperature=0.3)),
              Agent(name="e", model=DemoModel())]
    configs = [RunConfig(), RunConfig(model="gpt-5.2"), RunConfig(model=DemoModel()),
               RunConfig(model_settings=ModelSettings(max_tokens=9))]
    for agent in agents:
        for cfg in configs:
            got, want = fast(agent, cfg), slow(agent, cfg)
            assert got == want, (agent.name, cfg)
            assert got.to_json_dict() == want.to_json_dict()
            if want.reasoning is not None:  # the same fields set: the same request body
                assert got.reasoning.__pydantic_fields_set__ == \
                    want.reasoning.__pydantic_fields_set__
                assert got.reasoning.model_dump(exclude_unset=True) == \
                    want.reasoning.model_dump(exclude_unset=True)
            again = fast(agent, cfg)
            if got is not agent.model_settings:  # a run's own copy, as the SDK gives
                assert again is not got
                assert got.reasoning is None or again.reasoning is not got.reasoning


def test_only_a_pydantic_object_of_plain_values_is_copied_shallow() -> None:
    """A default setting's nested value is given to a run as a shallow copy only when that is
    its deep copy (sessions/model_shapes.py ``plain_model``)."""
    from openai.types.responses import ResponseOutputMessage
    from openai.types.shared import Reasoning

    assert plain_model(Reasoning(effort="low", summary="auto"))
    assert plain_model(Reasoning(effort="low", unknown_extra="x"))  # type: ignore[call-arg]
    assert not plain_model(Reasoning(effort="low", unknown_extra=["x"]))  # type: ignore[call-arg]
    assert not plain_model(ResponseOutputMessage(id="m", type="message", role="assistant",
                                                    status="completed", content=[]))
