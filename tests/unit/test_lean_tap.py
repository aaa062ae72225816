"""Text past the SDK's handler (sessions/lean_model.py "Text past the handler", the direct
path's tap in sessions/model_pump.py): the text given is the reply's, exactly once and in
order; the handler's final response is the one it gives without the tap; a turn that is more
than text goes to the Runner with the same result as without the tap; the pump is bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
import pytest
from agents import Agent, ModelProvider, ModelSettings, set_tracing_disabled
from agents.models.interface import Model, ModelTracing

from sessions import runtime
from sessions import sdk_speedups as S
from sessions.demo import calculate
from sessions.lean_model import LeanChatModel
from sessions.model_pump import CAUGHT_UP, END, MAX_WAITING, ModelPump
from sessions.runtime import stream_turn
from tests.unit.test_direct_run import Session
from tests.unit.test_lean_model import DONE, USAGE, events, sse

WORDS = [sse({"content": w}) for w in ("Hello", ",", " wide", " world", "!")]
OPENING = sse({"role": "assistant", "content": ""})
END_OK = [sse({}, "stop"), sse(usage=USAGE), DONE]
CALL = sse({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                            "function": {"name": "calculate",
                                         "arguments": '{"expression": "2+3"}'}}]})
STREAMS = {
    "one token a read": [OPENING, *WORDS, *END_OK],
    "two tokens a read": [OPENING + WORDS[0], WORDS[1] + WORDS[2], WORDS[3] + WORDS[4],
                          b"".join(END_OK)],
    "text and the end in one read": [OPENING, WORDS[0], b"".join([*WORDS[1:], *END_OK])],
    "no finish chunk": [OPENING, *WORDS, DONE],
    "no [DONE]": [OPENING, *WORDS],
    "text then a tool call": [OPENING, *WORDS, CALL, sse({}, "tool_calls"), DONE],
    "text, a tool call in the same read": [OPENING, *WORDS[:3], WORDS[3] + WORDS[4] + CALL,
                                           sse({}, "tool_calls") + DONE],
}


def setup_module() -> None:
    assert S.install()
    set_tracing_disabled(True)


def clients(*replies: list[bytes]) -> openai.AsyncOpenAI:
    """An OpenAI client whose n-th request is answered with ``replies[n]``, one read each."""
    left = list(replies)

    def handle(request: httpx2.Request) -> httpx2.Response:
        reads = left.pop(0)

        async def body() -> AsyncIterator[bytes]:
            for r in reads:
                yield r
        return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                               content=body())

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handle))
    return openai.AsyncOpenAI(api_key="sk-test", base_url="http://stub/v1", http_client=http,
                              max_retries=0)


class Tap:
    """A tap that records, in one list with the handler's events, what it is given."""

    def __init__(self, out: list[Any]) -> None:
        self.out = out

    def text(self, text: str) -> None:
        self.out.append(("text", text))

    def caught_up(self) -> None:
        self.out.append(("caught_up",))

    def full(self) -> bool:
        return False

    async def room(self) -> None:
        raise AssertionError("never full")


@pytest.mark.parametrize("name", list(STREAMS))
async def test_the_text_given_is_the_replys_and_the_response_the_same(name: str) -> None:
    reads = STREAMS[name]
    plain = await events(LeanChatModel("m", clients(reads)))
    model = LeanChatModel("m", clients(reads))
    got: list[Any] = []
    model.tap = Tap(got)
    async for e in model.stream_response(None, "hi", ModelSettings(), [], None, [],
                                         ModelTracing.DISABLED):
        dumped = e.model_dump()
        if "response" in dumped:
            dumped["response"].pop("created_at")
        got.append(dumped)
    assert model.tap is None, "the tap is for one call"
    # what a consumer gives: the tap's text, and every delta but the one after caught_up
    given, skip = [], False
    for e in got:
        if isinstance(e, tuple):
            if e[0] == "text":
                given.append(e[1])
            skip = e[0] == "caught_up"
        elif e["type"] == "response.output_text.delta":
            if not skip:
                given.append(e["delta"])
            skip = False
    full = "".join(e["delta"] for e in plain if e["type"] == "response.output_text.delta")
    assert "".join(given) == full == "Hello, wide world!"
    handler = [e for e in got if not isinstance(e, tuple)]
    assert handler[-1]["type"] == "response.completed"
    assert handler[-1]["response"] == plain[-1]["response"], "the same text, items, usage"
    assert [e["type"] for e in handler if e["type"] != "response.output_text.delta"] == \
        [e["type"] for e in plain if e["type"] != "response.output_text.delta"]
    # the handler's deltas are the same text, cut otherwise
    assert "".join(e["delta"] for e in handler
                   if e["type"] == "response.output_text.delta") == full
    if name in ("one token a read", "no finish chunk"):
        assert ("text", " wide") in got, "text skipped the handler"


class Lean(ModelProvider):
    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self.client = client

    def get_model(self, model_name: str | None) -> Model:
        return LeanChatModel("m", self.client)


AGENT = Agent(name="t", instructions="be brief", tools=[calculate])
ANSWER = [OPENING, sse({"content": "It is"}), sse({"content": " 5."}), *END_OK]


async def _turn(direct: bool, reads: list[bytes]) -> list[Any]:
    runtime.DIRECT[0] = direct
    log: list[Any] = []
    got: list[Any] = []
    try:
        async for item in stream_turn(AGENT, "what is 2+3", Session(log),  # type: ignore[arg-type]
                                      Lean(clients(reads, ANSWER))):
            got.append(item)
    finally:
        runtime.DIRECT[0] = True
    return [got, log]


@pytest.mark.parametrize("name", list(STREAMS))
async def test_a_turn_is_the_same_with_the_tap_and_through_the_runner(name: str) -> None:
    direct, runner = await _turn(True, STREAMS[name]), await _turn(False, STREAMS[name])
    text = "".join(getattr(i, "text", "") for i in direct[0])
    assert text.startswith("Hello, wide world!")
    # the Runner's deltas are cut as the stream's reads were; the direct path's as the tap's
    assert text == "".join(getattr(i, "text", "") for i in runner[0])
    assert [i for i in direct[0] if not isinstance(i, runtime.Delta)] == \
        [i for i in runner[0] if not isinstance(i, runtime.Delta)]
    assert direct[1] == runner[1], "the same session reads and writes"


async def _events(n: int, fed: list[int]) -> AsyncIterator[Any]:
    for i in range(n):
        fed.append(i)
        yield i


async def test_the_pump_stops_reading_at_its_bound_and_goes_on_when_taken() -> None:
    fed: list[int] = []
    pump = ModelPump()
    pump.start(_events(MAX_WAITING * 3, fed))
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(fed) == MAX_WAITING, "it stops reading at the bound"
    got = [await pump.next() for _ in range(MAX_WAITING // 2)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(fed) == MAX_WAITING + MAX_WAITING // 2
    while (e := await pump.next()) is not END:
        got.append(e)
    assert got == list(range(MAX_WAITING * 3)), "nothing lost, nothing doubled, in order"
    await pump.stop()


async def test_the_pump_joins_text_and_keeps_the_order() -> None:
    pump = ModelPump()

    async def stream() -> AsyncIterator[Any]:
        yield "e1"
        pump.text("a")
        pump.text("b")
        pump.caught_up()
        yield "e2"
        pump.text("c")
    pump.start(stream())
    got = []
    while (e := await pump.next()) is not END:
        got.append(e)
    assert got == ["e1", "ab", CAUGHT_UP, "e2", "c"]
    assert pump.text_waiting == 0


def test_the_busy_window_grows_with_the_streams_and_is_bounded() -> None:
    from sessions.coalescer import BUSY_MAX_S, BUSY_STREAMS, busy_window
    assert busy_window(0.04, 1) == busy_window(0.04, BUSY_STREAMS) == 0.04
    assert busy_window(0.04, BUSY_STREAMS * 2) == pytest.approx(0.08)
    assert busy_window(0.04, 100_000) == BUSY_MAX_S
    assert busy_window(0.5, 100_000) == 0.5, "never shorter than the configured window"
    assert busy_window(0.0, 100_000) == 0.0, "0 (read as it comes) stays 0"
