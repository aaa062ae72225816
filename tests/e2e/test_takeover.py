"""Operator takeover (docs/backend.md) against real processes: Redis, two edges, a worker and
the control plane. While an operator holds a session the user's turns are stored and delivered
but never run (not even by a worker started afresh), the operator's sends reach the user's
device on the other edge as ``message`` events, and after the release the agent's memory has
what was said."""

from __future__ import annotations

import asyncio
from typing import Any

import websockets

from sessions.bus import Bus
from tests.conftest import Client, Cluster, token
from tests.e2e.test_api import get
from tests.e2e.test_backend_api import eventually, opened, service

OP = service("sessions:operate", user="op-ann")
PATH = "/v1/sessions/desk/takeover"


async def operator(port: int) -> Client:
    c = await Client.open(port, session="desk", tok=OP)
    assert (await c.recv())["type"] == "welcome"
    return c


async def held(c: Client, text: str, cid: str) -> dict[str, Any]:
    """Send a user turn during the takeover: acked, delivered, ended without a run."""
    start = len(c.frames)
    await c.send(type="send", id=cid, text=text)
    turn = (await c.until("ack", id=cid))["offset"]

    def ended() -> list[dict[str, Any]]:  # its end may come before the ack
        return [f for f in c.frames[start:] if f["type"] == "cancelled" and f["turn"] == turn]

    async with asyncio.timeout(15):
        while not ended():
            await c.recv()
    end = ended()[0]
    assert end["reason"] == "takeover" and end["text"] == ""
    seen = c.frames[start:]
    assert [f for f in seen if f["type"] == "user" and f["text"] == text]
    assert not [f for f in seen if f["type"] in ("turn_start", "chunk", "reply")], seen
    return end


async def test_scopes_and_missing_sessions(cluster: Cluster) -> None:
    edge, api = cluster.edge(), cluster.api()
    c = await opened(edge.port, "tia", "desk")
    for tok in (token("tia"), service("sessions:write sessions:read")):  # owner; other scopes
        assert (await get(api, PATH, tok, "POST"))[0] == 403
        assert (await get(api, PATH, tok, "DELETE"))[0] == 403
    assert (await get(api, PATH, None, "POST"))[0] == 401
    assert (await get(api, "/v1/sessions/nope/takeover", OP, "POST"))[0] == 404
    status, body = await get(api, PATH, OP, "DELETE")  # not taken over: nothing to give back
    assert (status, body["active"], body["offset"]) == (200, False, 0)
    assert "/v1/sessions/{sid}/takeover" in (await get(api, "/openapi.json"))[1]["paths"]
    # an operator token opens no session that does not exist (never creates one)
    ghost = await Client.open(edge.port, session="ghost", tok=OP)
    try:
        while True:
            await ghost.recv()
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None and exc.rcvd.code == 4501
    assert (await get(api, "/v1/sessions/ghost/events", service("sessions:read")))[0] == 404
    await c.close()


async def test_takeover_holds_turns_across_restarts_and_gives_back(cluster: Cluster,
                                                                   bus: Bus) -> None:
    # the operator's edge is killed below: its node counts until its heartbeat key expires
    # (AGENTIA_NODE_TTL, 15 s by default; 4 here, a heartbeat every 1.3 s)
    a_edge, b_edge, api = cluster.edge(), cluster.edge(AGENTIA_NODE_TTL="4"), cluster.api()
    worker = cluster.worker("tests.agents_fixtures:slow", SLOW_DELAY="0.1")
    user = await opened(a_edge.port, "tia", "desk")
    await user.send(type="send", id="1", text="hello")
    await user.until("reply")
    await user.send(type="send", id="2", text="a long answer please, with many words in it")
    running = await user.until("chunk")
    # take over mid-turn: the running turn is cancelled, every device is told
    status, body = await get(api, PATH, OP, "POST")
    assert status == 200 and (body["active"], body["by"]) == (True, "op-ann")
    ev = await user.until("takeover")
    assert (ev["offset"], ev["active"], ev["by"]) == (body["offset"], True, "op-ann")
    assert "reason" not in await user.until("cancelled", turn=running["turn"])
    assert (await get(api, PATH, OP, "POST"))[1]["offset"] == 0  # already held: no event

    op = await operator(b_edge.port)

    async def operator_in(expected: bool) -> bool:
        p = (await get(api, "/v1/sessions/desk/presence", token("tia")))[1]
        return p["operator"] is expected and p["connected"] == 1

    await eventually(lambda: operator_in(True))
    await held(user, "is anyone there?", "3")
    await op.send(type="send", id="o1", text="I am Ann: your refund is on its way")
    assert (await op.until("ack", id="o1"))["duplicate"] is False
    m = await user.until("message")
    assert (m["role"], m["by"], m["text"]) == ("operator", "op-ann",
                                                "I am Ann: your refund is on its way")

    # the worker and the operator's edge restart during the takeover: still held
    worker.kill()
    b_edge.kill()
    await user.send(type="send", id="4", text="thanks, one more thing")
    ack = await user.until("ack", id="4")
    cluster.worker("tests.agents_fixtures:slow", SLOW_DELAY="0.1")
    end = await user.until("cancelled", turn=ack["offset"])
    assert end["reason"] == "takeover"
    op = await operator(cluster.edge().port)
    await op.send(type="send", id="o2", text="still with you")
    first = await op.until("ack", id="o2")
    assert (await user.until("message"))["text"] == "still with you"
    # a resend of the same id (a lost ack) is not posted again; a user's id is not the operator's
    await op.send(type="send", id="o2", text="still with you")
    again = await op.until("ack", id="o2")
    assert (again["offset"], again["duplicate"], first["duplicate"]) == (first["offset"], True,
                                                                         False)
    await op.send(type="send", id="4", text="the user sent a 4 too")
    assert (await op.until("ack", id="4"))["duplicate"] is False
    assert (await user.until("message"))["text"] == "the user sent a 4 too"
    await held(user, "hello again", "5")

    # give it back: the next turn runs and the agent saw what was said
    status, body = await get(api, PATH, OP, "DELETE")
    assert status == 200 and body["active"] is False and body["offset"] > 0
    assert (await op.until("takeover", active=False))["by"] == "op-ann"
    await op.close()
    # (the first operator's edge was killed: its entry counts until its heartbeat expires)
    await eventually(lambda: operator_in(False), timeout=15)
    await user.send(type="send", id="6", text="what did the operator say?")
    await user.until("turn_start")
    reply = await user.until("reply")
    assert "[operator op-ann] the user sent a 4 too" in reply["text"]  # the demo names the last
    memory = [r.decode() for r in await bus.redis.lrange(bus.keys.memory("desk"), 0, -1)]
    said = [r for r in memory if r.startswith("n|")]
    assert [s for s in said if "is anyone there?" in s] and [
        s for s in said if "thanks, one more thing" in s], memory
    assert said.index(next(s for s in said if "is anyone there?" in s)) < said.index(
        next(s for s in said if "refund is on its way" in s))
    await user.close()
