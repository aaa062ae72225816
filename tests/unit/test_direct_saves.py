"""The direct path's two saves of plain messages (sessions/sdk_history.py ``input_saved``,
``reply_saved``, used by sessions/direct_run.py) give the turn's session the items the SDK's
``save_result_to_session`` gives it, and the memory stores the same bytes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from agents import RunContextWrapper, set_tracing_disabled
from agents.items import ItemHelpers, MessageOutputItem
from agents.memory.session import (
    _session_accepts_wrapper,
    is_openai_responses_compaction_aware_session,
)
from agents.run_internal.items import ensure_input_item_format
from agents.run_internal.session_persistence import save_result_to_session
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputRefusal,
    ResponseOutputText,
)
from openai.types.responses.response_output_text import AnnotationURLCitation

from sessions import direct_run, runtime
from sessions import keys as K
from sessions import sdk_history as H
from sessions import sdk_speedups as S
from sessions.demo import DemoProvider, _output, demo_agent
from sessions.direct_run import TurnSession
from sessions.memory import RedisMemory
from sessions.memory_cache import Items


def setup_module() -> None:
    assert S.install()
    set_tracing_disabled(True)


class Recorder:
    """The memory under the turn's session, recording what it is given to add."""

    session_id = "s"
    session_settings = None
    outage = False

    def __init__(self) -> None:
        self.added: list[list[Any]] = []

    async def add_items(self, items: list[Any]) -> None:
        self.added.append(items)


def _bytes(items: list[Any]) -> list[bytes]:
    return [orjson.dumps(i) for i in items]  # key order too: what the memory stores


async def _sdk_input(to_save: list[Any]) -> list[list[Any]]:
    """What the direct path saved for the input before session 19 (the SDK's way)."""
    rec = Recorder()
    items = [ensure_input_item_format(i) for i in ItemHelpers.input_to_new_input_list(to_save)]
    if items:
        await save_result_to_session(TurnSession(rec), items, [], None,  # type: ignore[arg-type]
                                     wrapper=RunContextWrapper(context=None))
    return rec.added


async def _sdk_reply(output: list[Any]) -> list[list[Any]]:
    rec = Recorder()
    items = [MessageOutputItem(agent=demo_agent, raw_item=o) for o in output]
    await save_result_to_session(TurnSession(rec), [], items, None,  # type: ignore[arg-type]
                                 response_id="resp_1", wrapper=RunContextWrapper(context=None))
    return rec.added


USER = {"content": "hello there", "role": "user"}


@pytest.mark.parametrize("to_save", [
    [USER], [{"role": "user", "content": "ünïcödé ☃ \"q\""}],
    [{"type": "message", "role": "user", "content": "x", "id": "m1"}],
    [{"role": "user", "content": "x", "something": {"nested": [1, 2]}}, USER], [],
])
async def test_the_inputs_items_are_the_sdks(to_save: list[Any]) -> None:
    fast = H.input_saved(to_save)
    assert fast is not None
    sdk = await _sdk_input(to_save)
    assert ([fast] if fast else []) == sdk
    assert [_bytes(b) for b in sdk] == ([_bytes(fast)] if fast else [])
    if fast:
        assert all(a is not b for a, b in zip(fast, to_save, strict=True))  # copies


@pytest.mark.parametrize("to_save", [
    [{"role": "user", "content": [{"type": "input_text", "text": "look"}]}],  # parts
    [{"role": "user", "content": "x", "created_by": "runner"}],  # a key the SDK strips
    [{"type": "function_call_output", "call_id": "c", "output": "1"}],
    [USER, {"role": "user"}],
])
def test_any_other_input_goes_the_sdks_way(to_save: list[Any]) -> None:
    assert H.input_saved(to_save) is None


def _text(text: str, **more: Any) -> ResponseOutputText:
    return ResponseOutputText(text=text, type="output_text", **{"annotations": [], **more})


def _message(*parts: Any, **more: Any) -> ResponseOutputMessage:
    return ResponseOutputMessage(id="msg_1", type="message", role="assistant",
                                 status="completed", content=list(parts), **more)


CITED = _text("see", logprobs=[], annotations=[AnnotationURLCitation(
    type="url_citation", url="https://example.com", title="t", start_index=0, end_index=3)])


@pytest.mark.parametrize("output", [
    [_output("You said: hello. I am a demo agent")],  # the demo's (sessions/model_shapes.py)
    [_message(_text("one"))],
    [_message(_text("one"), _text("two")), _message(_text("three"))],
    [_message(CITED)],
    [_message(_text("x"), phase="final_answer")],
    [_message(_text("x"), created_by="server")],  # an extra field the SDK drops
    [ResponseOutputMessage.model_construct(id="m", type="message", role="assistant",
                                           status=None, content=[_text("no status")])],
    [ResponseOutputMessage.model_construct(id="m", type="message", role="assistant",
                                           content=[_text("status unset")])],
    [_message(ResponseOutputRefusal(type="refusal", refusal="no"))],
    [],
])
async def test_the_replys_items_are_the_sdks(output: list[Any]) -> None:
    fast = H.reply_saved(output)
    assert fast is not None
    sdk = await _sdk_reply(output)
    assert ([fast] if fast else []) == sdk
    assert [_bytes(b) for b in sdk] == ([_bytes(fast)] if fast else [])


def test_a_reply_of_anything_else_goes_the_sdks_way() -> None:
    call = ResponseFunctionToolCall(type="function_call", name="f", call_id="c", id="fc",
                                    arguments="{}")
    assert H.reply_saved([_message(_text("x")), call]) is None
    assert H.reply_saved([{"type": "message", "role": "assistant", "content": []}]) is None


def test_the_turn_session_takes_saves_as_a_plain_session() -> None:
    """What makes the SDK's save one ``add_items`` call on it: no ``wrapper`` parameter, no
    compaction, no write generation (a change to TurnSession that adds one fails here)."""
    session = TurnSession(Recorder())  # type: ignore[arg-type]
    assert not _session_accepts_wrapper(session)
    assert not is_openai_responses_compaction_aware_session(session)  # type: ignore[arg-type]
    assert getattr(session, "_add_items_with_generation", None) is None


HISTORY = [{"content": f"turn {i}", "role": "user"} if i % 2 == 0 else
           {"id": "msg_demo", "content": [{"annotations": [], "text": f"reply {i}",
                                           "type": "output_text", "logprobs": []}],
            "role": "assistant", "status": "completed", "type": "message"}
           for i in range(20)]


async def _stored(said: str) -> list[bytes]:
    """The bytes a demo turn on the direct path leaves the memory to write."""
    memory = RedisMemory(None, K.Keys("agentia"), "s", 7, remember=object())  # type: ignore[arg-type]
    memory.preload(Items(HISTORY, len(HISTORY)))
    async for _ in runtime.stream_turn(demo_agent, said, memory, DemoProvider(0)):
        pass
    return memory.take_unsaved()


@pytest.mark.parametrize("said", ["hello", "what did i say", "ünïcödé ☃ \"q\" \\"])
async def test_the_stored_bytes_are_the_sdks(said: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = await _stored(said)
    monkeypatch.setattr(H, "input_saved", lambda _: None)
    monkeypatch.setattr(H, "reply_saved", lambda _: None)
    sdk = await _stored(said)
    assert fast == sdk
    assert len(fast) == 2 and fast[0].startswith(b"7|{")


async def test_a_plain_turn_makes_no_context_wrapper() -> None:
    """The run's context wrapper (a pydantic validation) is made only when something asks for
    it: not for a plain history, string instructions and a text reply; yes for a history the
    SDK's own preparation reads (it takes the wrapper)."""
    async def run(history: list[Any]) -> direct_run.DirectRun:
        memory = RedisMemory(None, K.Keys("agentia"), "s", 1, remember=object())  # type: ignore[arg-type]
        memory.preload(history)
        cfg = runtime.run_config(DemoProvider(0))
        run = direct_run.DirectRun(demo_agent, "hello", memory, cfg)
        async for _ in run.stream():
            pass
        assert run.fallback is None
        return run

    assert (await run(Items(HISTORY, len(HISTORY))))._ctx is None
    call = {"type": "function_call", "name": "calculate", "call_id": "c1", "id": "fc1",
            "arguments": "{}"}
    output = {"type": "function_call_output", "call_id": "c1", "output": "2"}
    assert (await run([*HISTORY, call, output]))._ctx is not None
