"""A user's turn through real processes: edge -> Redis Streams -> worker -> edge."""

from __future__ import annotations

from tests.conftest import Client, Cluster


async def test_full_turn_streams_chunks_then_reply(cluster: Cluster) -> None:
    edge = cluster.edge()
    cluster.worker("tests.agents_fixtures:slow", SLOW_DELAY="0.02")
    c = await Client.open(edge.port, session="s-full")
    welcome = await c.recv()
    assert welcome["type"] == "welcome" and welcome["session"] == "s-full"
    assert welcome["protocol"] == "agentia.v1" and welcome["offset"] == 0
    await c.send(type="send", id="m1", text="hello there")
    ack = await c.until("ack")
    assert ack == {"type": "ack", "id": "m1", "offset": 1, "duplicate": False}
    reply = await c.until("reply", turn=1)
    kinds = [f["type"] for f in c.frames]
    chunks = [f for f in c.frames if f["type"] == "chunk"]
    assert len(chunks) >= 2, kinds
    assert "".join(d["text"] for d in chunks) == reply["text"]
    assert "hello there" in reply["text"]
    offsets = [f["offset"] for f in c.frames if "offset" in f and f["type"] not in ("ack",)]
    events = [o for o in offsets if o != 0]
    assert events == list(range(1, len(events) + 1)), offsets
    await c.close()


async def test_tool_call_and_memory(cluster: Cluster) -> None:
    edge = cluster.edge()
    cluster.worker()
    c = await Client.open(edge.port, session="s-tools")
    await c.recv()
    await c.send(type="send", id="a", text="what is 6 * 7")
    tool = await c.until("tool_call")
    assert tool["name"] == "calculate"
    reply = await c.until("reply")
    assert "42" in reply["text"]
    await c.send(type="send", id="b", text="what did I say")
    reply = await c.until("reply", turn=reply["offset"] + 1)
    assert "what is 6 * 7" in reply["text"]
    await c.close()
