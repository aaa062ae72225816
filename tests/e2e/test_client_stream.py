"""The Python SDK's ``stream()`` (one turn's typed events) and ``Backoff.max_first_attempts``
against real edges, workers and Redis."""

from __future__ import annotations

import asyncio
import socket

import pytest

from agentia_client import (
    AgentiaClient,
    Backoff,
    Cancelled,
    Chunk,
    Partial,
    ReconnectFailed,
    Reply,
    ToolCall,
    TurnEvent,
    TurnStart,
    UserMessage,
)
from tests.conftest import Cluster, token
from tests.e2e.test_client_sdk import LONG, url

pytestmark = pytest.mark.e2e


def check_turn(events: list[TurnEvent], text: str) -> None:
    """One whole turn: its user event first, contiguous offsets, and its streamed text
    (chunks appended, a partial replacing) a prefix of the reply all along, then the reply."""
    user, end = events[0], events[-1]
    assert isinstance(user, UserMessage) and user.text == text
    assert all(getattr(e, "turn", user.offset) == user.offset for e in events)
    offsets = [e.offset for e in events if not isinstance(e, Chunk | Partial)]
    assert offsets == list(range(user.offset, user.offset + len(offsets))), offsets
    assert isinstance(end, Reply) and sum(isinstance(e, Reply) for e in events) == 1
    shown = ""
    for e in events[:-1]:
        if isinstance(e, TurnStart):
            shown = ""
        elif isinstance(e, Chunk):
            shown += e.text
        elif isinstance(e, Partial):
            shown = e.text
        assert end.text.startswith(shown), (shown, end.text)
    assert shown == end.text  # every chunk came before the reply


async def test_stream_yields_the_turn_typed_until_its_reply(cluster: Cluster) -> None:
    edge = cluster.edge()
    cluster.worker()
    async with AgentiaClient(url(edge), token("alice")) as c:
        events = [ev async for ev in c.stream("what is 19 + 23")]
        check_turn(events, "what is 19 + 23")
        assert isinstance(events[1], TurnStart) and events[1].attempt == 1
        assert any(isinstance(e, ToolCall) and e.name == "calculate" for e in events)
        assert "42" in events[-1].text  # type: ignore[union-attr]
        second = [ev async for ev in c.stream("again")]  # the next turn, nothing of the first
        check_turn(second, "again")
        assert isinstance(second[0], UserMessage) and isinstance(events[-1], Reply)
        assert second[0].offset > events[-1].offset


async def test_stream_goes_on_across_an_edge_kill(cluster: Cluster) -> None:
    e1, e2 = cluster.edge(), cluster.edge()
    cluster.worker("tests.agents_fixtures:slow", SLOW_DELAY="0.05")
    async with AgentiaClient([url(e1), url(e2)], token("alice"), session="stream-kill") as c:
        events: list[TurnEvent] = []
        async with asyncio.timeout(30):
            async for ev in c.stream(LONG):
                events.append(ev)
                if isinstance(ev, Chunk) and c.stats["reconnects"] == 0:
                    e1.kill()  # mid-reply (the client tries e1 first)
        check_turn(events, LONG)
        assert c.stats["reconnects"] == 1 and LONG in events[-1].text  # type: ignore[union-attr]
        # the resume's answer held the text so far: no hole, no repeat
        assert any(isinstance(e, Partial) for e in events)


async def test_stream_ends_with_cancelled(cluster: Cluster) -> None:
    edge = cluster.edge()
    cluster.worker("tests.agents_fixtures:slow", SLOW_DELAY="0.1")
    async with AgentiaClient(url(edge), token("alice")) as c:
        events: list[TurnEvent] = []
        async with asyncio.timeout(30):
            async for ev in c.stream(LONG):
                events.append(ev)
                if isinstance(ev, Chunk) and sum(isinstance(e, Chunk) for e in events) == 1:
                    await c.cancel(ev.turn)
        assert isinstance(events[0], UserMessage)
        assert isinstance(events[-1], Cancelled) and events[-1].turn == events[0].offset
        assert not any(isinstance(e, Reply) for e in events)


async def test_close_right_after_a_replay_returns_at_once(cluster: Cluster) -> None:
    edge = cluster.edge()
    cluster.worker()
    async with AgentiaClient(url(edge), token("alice"), session="replay-close") as c:
        await c.ask("hello")
    c = AgentiaClient(url(edge), token("alice"), session="replay-close", after=0)
    await c.connect()
    async with asyncio.timeout(10):
        first = await c.next_event()  # released with the resume's answer
        await c.close()
    assert isinstance(first, dict) and first["offset"] == 1 and not c.running


async def test_max_first_attempts_fails_fast_before_any_connection() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = AgentiaClient(f"ws://127.0.0.1:{port}/v1/ws", token("alice"),
                      backoff=Backoff(base=0.01, cap=0.05, max_attempts=50,
                                      max_first_attempts=1))
    with pytest.raises(ReconnectFailed) as info:
        await c.connect()
    assert info.value.attempts == 1 and c.stats["connect_attempts"] == 1
    with pytest.raises(ValueError):
        Backoff(max_first_attempts=0)
