"""Edges on three hosts, workers on a fourth, one Redis: a conversation survives moving between
hosts and losing one (docs/multihost.md). Each host is a network namespace of its own."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import orjson
import pytest
import websockets

from agentia_client import AgentiaClient, Backoff
from sessions.bus import Bus, connect
from tests.conftest import Client, Proc, streamed_text, token
from tests.e2e.test_client_sdk import Collector, has
from tests.multihost.conftest import Host, Hosts

pytestmark = [pytest.mark.e2e, pytest.mark.multihost]

LONG = "please tell me something rather long so that the reply streams for a while"
SECOND = "and then a second question queued behind the first"


async def open_on(host: Host, session: str) -> Client:
    ws = await websockets.connect(
        f"{host.url}?session={session}", compression=None, open_timeout=10,
        additional_headers={"Authorization": f"Bearer {token('alice')}"})
    return Client(ws)


def events(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if "offset" in f and f["type"] not in ("ack", "welcome",
                                                                        "resumed")]


def check_session(got: list[dict[str, Any]], turns: dict[str, int],
                  streamed: list[dict[str, Any]] | None) -> None:
    """No gap, no duplicate, and every acked turn (client id -> ack offset) answered once,
    its streamed text (``streamed``: every frame received, in order, over every connection)
    adding up to its reply (not checked for the log, which keeps no chunk: ``None``)."""
    offsets = [e["offset"] for e in got]
    assert offsets == list(range(1, len(got) + 1)), offsets
    users = {e["id"]: e["offset"] for e in got if e["type"] == "user"}
    assert users == turns
    for turn in turns.values():
        replies = [e for e in got if e["type"] == "reply" and e["turn"] == turn]
        assert len(replies) == 1, (turn, got)
        if streamed is not None:
            assert streamed_text(streamed, turn) == replies[0]["text"], (turn, streamed)


async def move(old: Client, to: Host, node: Proc, session: str) -> Client:
    """Drop the old socket (RST, no close frame), open one on ``to`` and resume after the last
    event seen; the new host's welcome names its own node."""
    epoch = next(f["epoch"] for f in old.frames if f["type"] == "welcome")
    seen = events(old.frames)
    old.ws.transport.abort()
    new = await open_on(to, session)
    assert (await new.until("welcome"))["node"] == node.info["node"]
    await new.send(type="resume", after=seen[-1]["offset"], epoch=epoch)
    assert (await new.until("resumed"))["recovered"] is True
    return new


def resumed_events(new: Client, after: int) -> list[dict[str, Any]]:
    """What a resumed connection delivered, applied as docs/protocol.md section 6 says, and
    checked exactly on the wire: before ``resumed``, every offset from ``after + 1`` to its
    ``offset`` (a live event that raced the ``resume`` may come twice, identical: the only
    repeat the protocol allows); after it, each live event is the next offset."""
    at = next(i for i, f in enumerate(new.frames) if f["type"] == "resumed")
    upto = new.frames[at]["offset"]
    by_offset: dict[int, dict[str, Any]] = {}
    for e in events(new.frames[:at]):
        assert by_offset.setdefault(e["offset"], e) == e
    assert sorted(by_offset) == list(range(after + 1, upto + 1))
    live = events(new.frames[at + 1:])
    assert [e["offset"] for e in live] == list(range(upto + 1, upto + 1 + len(live)))
    assert live, "the rest of the reply should come live, through the new host"
    return [by_offset[o] for o in sorted(by_offset)] + live


async def until_replied(c: Client, turn: int) -> None:
    if not any(f["type"] == "reply" and f["turn"] == turn for f in c.frames):
        await c.until("reply", timeout=30, turn=turn)


async def test_client_on_a_resumes_on_c_mid_reply(hosts: Hosts) -> None:
    a, c, w = hosts["a"], hosts["c"], hosts["w"]
    edge_a, edge_c, _ = hosts.together(
        partial(hosts.edge_on, a), partial(hosts.edge_on, c),
        partial(hosts.worker_on, w, "tests.agents_fixtures:slow", SLOW_DELAY="0.1"))
    assert edge_a.info["node"] != edge_c.info["node"]
    sessions = [f"hop{i}" for i in range(4)]
    olds = [await open_on(a, s) for s in sessions]
    for old in olds:
        assert (await old.until("welcome"))["node"] == edge_a.info["node"]
        await old.send(type="send", id="q", text=LONG)
    acks = [(await old.until("ack"))["offset"] for old in olds]
    for old in olds:
        await old.until("chunk")
        await old.until("chunk")  # mid-reply: more is on its way
    news = [await move(old, c, edge_c, s) for old, s in zip(olds, sessions, strict=True)]
    for old, new, turn in zip(olds, news, acks, strict=True):
        await until_replied(new, turn)
        before = events(old.frames)
        check_session(before + resumed_events(new, before[-1]["offset"]), {"q": turn},
                      old.frames + new.frames)
        await new.close()


async def test_killing_host_b_loses_no_acked_turn(hosts: Hosts) -> None:
    a, b, c, w = hosts["a"], hosts["b"], hosts["c"], hosts["w"]
    *edges, _ = hosts.together(
        *(partial(hosts.edge_on, h) for h in (a, b, c)),
        partial(hosts.worker_on, w, "tests.agents_fixtures:slow", SLOW_DELAY="0.08"))
    nodes = {h.name: e for h, e in zip((a, b, c), edges, strict=True)}

    # raw clients on B, each with one turn running and one acked behind it
    raw_sessions = [f"raw{i}" for i in range(4)]
    raws = [await open_on(b, s) for s in raw_sessions]
    turns: list[dict[str, int]] = []
    for raw in raws:
        await raw.until("welcome")
        await raw.send(type="send", id="q1", text=LONG)
        await raw.send(type="send", id="q2", text=SECOND)
        turns.append({"q1": (await raw.until("ack", id="q1"))["offset"],
                      "q2": (await raw.until("ack", id="q2"))["offset"]})
    # SDK clients that start on B and know A and C too; a dead host answers no ping, and
    # only the keepalive tells (2 s: an edge that is merely busy must not look dead)
    sdks = [AgentiaClient([b.url, *order], token("alice"), session=f"sdk{i}",
                          keepalive_s=2.0, close_timeout=1.0, backoff=Backoff(base=0.2),
                          stream_text=True)  # events() yields chunk/partial frames too
            for i, order in enumerate([[a.url, c.url], [c.url, a.url]] * 2)]
    for sdk in sdks:
        await sdk.connect()
    cols = [Collector(sdk) for sdk in sdks]
    asks = [asyncio.create_task(sdk.ask(LONG)) for sdk in sdks]
    news: list[Client] = []
    try:
        for raw, t in zip(raws, turns, strict=True):
            await raw.until("chunk", turn=t["q1"])
        for col in cols:
            await col.until(has("chunk"), frames=True)
        assert all(sdk.node == nodes["b"].info["node"] for sdk in sdks)

        hosts.kill_host(b)  # mid-reply, with acked turns running and queued

        survivors = [(a, nodes["a"]), (c, nodes["c"])]
        for i, (raw, s) in enumerate(zip(raws, raw_sessions, strict=True)):
            news.append(await move(raw, *survivors[i % 2], s))
        for raw, new, t in zip(raws, news, turns, strict=True):
            await until_replied(new, t["q2"])
            before = events(raw.frames)
            check_session(before + resumed_events(new, before[-1]["offset"]), t,
                          raw.frames + new.frames)

        texts = await asyncio.wait_for(asyncio.gather(*asks), 30)
        for sdk, col, text in zip(sdks, cols, texts, strict=True):
            await col.until(has("reply"))
            assert LONG in text and sdk.node in (nodes["a"].info["node"], nodes["c"].info["node"])
            assert sdk.stats["reconnects"] == 1 and sdk.stats["resumes"] == 1
            (user,) = [e for e in col.events if e["type"] == "user"]
            check_session(col.events, {user["id"]: user["offset"]}, None)
            # the turn may end while the SDK finds out B is dead (its keepalive): then the
            # reply, not a partial, brings the rest; what streamed is a prefix of it
            streamed = streamed_text([i for i in col.items if isinstance(i, dict)],
                                     user["offset"])
            assert streamed and text.startswith(streamed), (streamed, text)
    finally:
        for task in asks:
            task.cancel()
        for col in cols:
            await col.stop()
        for sdk in sdks:
            await sdk.close()
        for new in news:
            await new.close()

    # what Redis holds agrees: every acked turn once, with one reply
    bus = Bus(connect(hosts.env["AGENTIA_REDIS_URL"]), prefix=hosts.env["AGENTIA_REDIS_PREFIX"])
    try:
        for s, t in zip(raw_sessions, turns, strict=True):
            replay = await bus.replay(s, 0, None)
            logged = [{"offset": o, **orjson.loads(e)} for o, e in replay.events]
            check_session(logged, t, None)  # reply text is in the log once, in its reply
            assert {e["type"] for e in logged} <= {"user", "turn_start", "state", "tool_call",
                                                  "tool_result", "reply"}
    finally:
        await bus.close()
