"""The Python client SDK (clients/python/agentia_client) against real edges, workers and Redis."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from agentia_client import (
    AgentiaClient,
    AuthenticationError,
    Backoff,
    Event,
    ReconnectFailed,
    RequestError,
    Reset,
    TurnCancelled,
)
from sessions.bus import Bus
from tests.conftest import Cluster, Proc, token

LONG = "please tell me something rather long so that the reply streams for a while"


def url(p: Proc) -> str:
    return f"ws://127.0.0.1:{p.port}/v1/ws"


class Collector:
    """Consumes ``client.events()`` in a task; tests await conditions on what it saw."""

    def __init__(self, client: AgentiaClient) -> None:
        self.client = client
        self.items: list[Event | Reset] = []
        self._cond = asyncio.Condition()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for item in self.client.events():
                async with self._cond:
                    self.items.append(item)
                    self._cond.notify_all()
        finally:
            async with self._cond:
                self._cond.notify_all()

    @property
    def events(self) -> list[Event]:
        """The log events (with an offset)."""
        return [e for e in self.items if isinstance(e, dict) and "offset" in e]

    @property
    def frames(self) -> list[Event]:
        """The ``chunk``/``partial`` frames (a client made with ``stream_text=True``)."""
        return [e for e in self.items if isinstance(e, dict) and "offset" not in e]

    async def until(self, pred: Callable[[list[Event]], bool], timeout: float = 15,
                    *, frames: bool = False) -> None:
        async with asyncio.timeout(timeout), self._cond:
            while not pred(self.frames if frames else self.events):
                if self.task.done():
                    self.task.result()
                    raise AssertionError("events() ended before the condition held")
                await self._cond.wait()

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.wait({self.task})


def has(kind: str, **match: Any) -> Callable[[list[Event]], bool]:
    return lambda evs: any(e["type"] == kind and all(e.get(k) == v for k, v in match.items())
                           for e in evs)


def assert_contiguous(events: list[Event], first: int = 1) -> None:
    offsets = [e["offset"] for e in events]
    assert offsets == list(range(first, first + len(offsets))), offsets


async def test_ask_round_trip(cluster: Cluster) -> None:
    edge = cluster.edge()
    cluster.worker()
    async with AgentiaClient(url(edge), token("alice")) as c:
        assert c.session is not None and len(c.session) == 32  # created by the edge
        assert c.connected and c.limits is not None and c.epoch is not None
        assert "42" in await c.ask("what is 6 * 7")
        assert "what is 6 * 7" in await c.ask("what did I say")
        # user, turn_start, state thinking, state tool, tool_call, tool_result, state speaking,
        # state idle, reply; user, turn_start, states thinking, speaking and idle, reply
        assert c.offset == 15
        with pytest.raises(RequestError) as too_long:  # refused locally, from welcome.limits
            await c.send("x" * (c.limits.max_text_chars + 1))
        assert too_long.value.code == "bad_frame"
        with pytest.raises(RequestError) as inactive:
            await c.cancel(10_000)
        assert inactive.value.code == "turn_not_active"
        assert c.stats["connections"] == 1 and c.stats["retries"] == 0
    assert not c.running and not c.connected


async def test_events_stream_in_order_history_and_cancel(cluster: Cluster) -> None:
    edge = cluster.edge()
    cluster.worker("tests.agents_fixtures:slow", SLOW_DELAY="0.03")
    async with AgentiaClient(url(edge), token("alice"), session="sdk-stream",
                             stream_text=True) as c:
        col = Collector(c)
        ack = await c.send("hello there")
        assert ack.offset == 1 and not ack.duplicate
        await col.until(has("reply", turn=ack.offset))
        evs = col.events
        assert_contiguous(evs)
        assert [e["type"] for e in evs[:2]] == ["user", "turn_start"]
        assert evs[0]["id"] == ack.id and evs[0]["text"] == "hello there"
        assert evs[-1]["type"] == "reply" and "hello there" in evs[-1]["text"]
        assert [e["type"] for e in evs] == ["user", "turn_start", "state", "state", "state",
                                            "reply"]  # no text events
        chunks = [f for f in col.frames if f["type"] == "chunk" and f["turn"] == ack.offset]
        assert len(chunks) >= 2 and [f["seq"] for f in chunks] == list(range(1, len(chunks) + 1))
        assert "".join(f["text"] for f in chunks) == evs[-1]["text"]
        items = [i for i in col.items if isinstance(i, dict)]
        assert items.index(chunks[-1]) < items.index(evs[-1])  # in order, before the reply

        # a second client asking for the whole log gets the same events from offset 1
        async with AgentiaClient(url(edge), token("alice"), session="sdk-stream",
                                 after=0) as h:
            hist = Collector(h)
            await hist.until(lambda got: len(got) >= len(evs))
            assert hist.events[:len(evs)] == evs
            await hist.stop()

        # cancel a running turn: ask() raises TurnCancelled with the partial text
        seen: list[str] = []
        first = asyncio.Event()

        def on_text(text: str) -> None:
            seen.append(text)
            first.set()

        task = asyncio.create_task(c.ask(LONG, on_text=on_text))
        await asyncio.wait_for(first.wait(), 10)
        turn = await c.cancel()
        with pytest.raises(TurnCancelled) as cancelled:
            await task
        assert cancelled.value.turn == turn and cancelled.value.text.startswith(seen[0])
        await col.until(has("cancelled", turn=turn))
        assert_contiguous(col.events)
        assert not any(e["type"] == "reply" and e["turn"] == turn for e in col.events)
        await col.stop()


async def _reply_survives_edge_loss(cluster: Cluster, stop_edge: Callable[[Proc], None],
                                    session: str) -> AgentiaClient:
    e1, e2 = cluster.edge(), cluster.edge()
    cluster.worker("tests.agents_fixtures:slow", SLOW_DELAY="0.05")
    async with AgentiaClient([url(e1), url(e2)], token("alice"), session=session,
                             stream_text=True) as c:
        col = Collector(c)
        first_node = c.node
        texts: list[str] = []
        task = asyncio.create_task(c.ask(LONG, on_text=texts.append))
        await col.until(has("chunk"), frames=True)
        stop_edge(e1)  # mid-reply
        text = await asyncio.wait_for(task, 15)
        await col.until(has("reply"))
        assert c.node not in (None, first_node)
        evs = col.events
        assert_contiguous(evs)  # no loss, no duplicate, in order
        replies = [e for e in evs if e["type"] == "reply"]
        assert len(replies) == 1 and replies[0]["text"] == text and LONG in text
        # the streamed text never went back nor skipped: each step a longer prefix
        assert texts and all(text.startswith(t) for t in texts), texts
        assert all(len(a) < len(b) for a, b in itertools.pairwise(texts)), texts
        assert any(f["type"] == "partial" for f in col.frames)  # the gap was filled
        assert c.stats["reconnects"] == 1
        await col.stop()
    return c


async def test_reconnects_to_second_edge_after_kill_mid_reply(cluster: Cluster) -> None:
    c = await _reply_survives_edge_loss(cluster, lambda e: e.kill(), "sdk-kill")
    assert c.stats["close_1006"] == 1  # no close frame: the edge died


async def test_reconnects_after_sigterm_drain(cluster: Cluster) -> None:
    drained: list[Proc] = []

    def drain(e: Proc) -> None:
        e.proc.send_signal(signal.SIGTERM)
        drained.append(e)

    c = await _reply_survives_edge_loss(cluster, drain, "sdk-drain")
    assert c.stats["close_1012"] == 1 and c.last_close is not None
    assert drained[0].proc.wait(15) == 0


async def test_unacked_send_is_resent_with_its_id_after_reconnect(bus: Bus,
                                                                  cluster: Cluster) -> None:
    e1, e2 = cluster.edge(), cluster.edge()
    cluster.worker()
    written = asyncio.Event()

    def trace(direction: str, frame: dict[str, Any]) -> None:
        if direction == "out" and frame["type"] == "send":
            written.set()

    async with AgentiaClient([url(e1), url(e2)], token("alice"), session="sdk-resend",
                             trace=trace) as c:
        os.kill(e1.proc.pid, signal.SIGSTOP)  # frozen: it will never read the send
        task = asyncio.create_task(c.ask("were you there"))
        await asyncio.wait_for(written.wait(), 5)
        e1.kill()
        assert "were you there" in await asyncio.wait_for(task, 15)
        assert c.stats["resent"] == 1
    r = await bus.replay("sdk-resend", 0, None)
    users = [orjson.loads(e) for _, e in r.events if orjson.loads(e)["type"] == "user"]
    assert len(users) == 1


async def test_rate_limited_send_is_retried_with_the_same_id(bus: Bus,
                                                             cluster: Cluster) -> None:
    edge = cluster.edge(AGENTIA_RATE_PER_S="1", AGENTIA_BURST="1")
    cluster.worker()
    out: list[dict[str, Any]] = []

    def trace(direction: str, frame: dict[str, Any]) -> None:
        if direction == "out" and frame["type"] == "send":
            out.append(frame)

    texts = ["first message", "second message", "third message"]
    async with AgentiaClient(url(edge), token("alice"), session="sdk-rate",
                             pace_requests=False, trace=trace) as c:
        replies = await asyncio.gather(*(c.ask(t) for t in texts))
        assert c.stats["error_rate_limited"] >= 1 and c.stats["retries"] >= 1
    for text, reply in zip(texts, replies, strict=True):
        assert text in reply
    per_id = Counter(f["id"] for f in out)
    assert len(per_id) == 3 and max(per_id.values()) >= 2  # a retry, with the same id
    assert {f["id"]: f["text"] for f in out}.keys() == per_id.keys()
    r = await bus.replay("sdk-rate", 0, None)
    log = [orjson.loads(e) for _, e in r.events]
    users = [e for e in log if e["type"] == "user"]
    assert sorted(u["id"] for u in users) == sorted(per_id)  # one turn per message
    assert sum(e["type"] == "reply" for e in log) == 3

    # with pacing (the default) the same burst is spread out and never refused
    async with AgentiaClient(url(edge), token("alice"), session="sdk-paced") as p:
        acks = await asyncio.gather(*(p.send(t) for t in texts[:2]))
        assert acks[0].offset < acks[1].offset  # in order, each once
        assert p.stats["error_rate_limited"] == 0 and p.stats["retries"] == 0


async def test_token_callable_is_refreshed_after_expiry(cluster: Cluster) -> None:
    # the sweeper runs every idle_timeout/3 = 1 s; without pings the idle close (4001)
    # would come before the token expiry (4003, after exp + 5 s leeway)
    edge = cluster.edge(AGENTIA_IDLE_TIMEOUT_S="3")
    cluster.worker()
    issued: list[str] = []
    refreshed = asyncio.Event()

    async def fresh_token() -> str:
        issued.append(token("alice", ttl=2 if not issued else 3600))
        if len(issued) > 1:
            refreshed.set()
        return issued[-1]

    async with AgentiaClient(url(edge), fresh_token, session="sdk-token") as c:
        assert "before" in await c.ask("before expiry")
        await asyncio.wait_for(refreshed.wait(), 15)
        assert "after" in await c.ask("after expiry")
        assert c.stats["close_4003"] == 1 and c.stats["close_4001"] == 0
        assert c.stats["pings"] >= 2 and c.stats["reconnects"] == 1
    assert len(issued) == 2 and issued[0] != issued[1]


async def test_rejected_token_raises_and_does_not_loop(cluster: Cluster) -> None:
    edge = cluster.edge()
    for bad, why in ((token("alice", ttl=-60), "token expired"), ("not-a-jwt", "invalid")):
        c = AgentiaClient(url(edge), bad, session="sdk-auth")
        with pytest.raises(AuthenticationError) as info:
            await c.connect()
        assert info.value.status == 401 and why in info.value.reason
        assert c.stats["connect_attempts"] == 1 and not c.running and c.error is info.value
        with pytest.raises(AuthenticationError):
            await c.send("anything")
        await c.close()
    # a session of another user: 403
    async with AgentiaClient(url(edge), token("alice"), session="sdk-owned"):
        pass
    c = AgentiaClient(url(edge), token("mallory"), session="sdk-owned")
    with pytest.raises(AuthenticationError) as info:
        await c.connect()
    assert info.value.status == 403 and c.stats["connect_attempts"] == 1
    await c.close()


async def test_bounded_event_queue_refetches_what_did_not_fit(cluster: Cluster) -> None:
    edge = cluster.edge()
    cluster.worker()
    async with AgentiaClient(url(edge), token("alice"), session="sdk-small",
                             max_events=4) as c:
        # nobody reads events() yet: the queue fills, ask() is not held up
        replies = [await c.ask(f"message number {n}") for n in range(3)]
        last = c.offset
        col = Collector(c)
        await col.until(lambda evs: bool(evs) and evs[-1]["offset"] >= last)
        evs = col.events
        assert_contiguous(evs)
        assert [e["text"] for e in evs if e["type"] == "reply"] == replies
        assert c.stats["resumes"] >= 1  # what did not fit was fetched again
        await col.stop()


async def test_unreachable_edges_give_up_after_max_attempts() -> None:
    ports = []
    for _ in range(2):  # two ports nobody listens on
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    c = AgentiaClient([f"ws://127.0.0.1:{p}/v1/ws" for p in ports], token("alice"),
                      backoff=Backoff(base=0.01, cap=0.05, max_attempts=4))
    with pytest.raises(ReconnectFailed) as info:
        await c.connect()
    assert info.value.attempts == 4 and isinstance(info.value.last, OSError)
    assert c.stats["connect_attempts"] == 4 and not c.running


async def test_send_after_the_session_was_lost_reconnects_and_lands(
        cluster: Cluster, bus: Bus) -> None:
    """Redis forgot the session under an open connection: the edge answers session_lost and
    closes with 4004; the client reconnects (the session is reopened, new epoch) and resends."""
    edge = cluster.edge()
    cluster.worker()
    async with AgentiaClient(url(edge), token("lena"), session="lost-1") as client:
        assert "first" in await client.ask("first")
        await bus.redis.delete(bus.keys.meta("lost-1"), bus.keys.log("lost-1"))
        reply = await asyncio.wait_for(client.ask("second"), 30)
        assert "second" in reply
    r = await bus.replay("lost-1", 0, None)
    texts = [orjson.loads(e).get("text") for _, e in r.events]
    assert texts.count("second") == 1
