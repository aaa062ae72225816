"""Human approval of a tool call through real processes (docs/protocol.md ``approve``,
``approval_request``, ``approval_result``): from another edge after a reconnect, rejected,
raced by two devices, timed out, across a killed worker, cancelled while it waits."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from loadtest.openai_stub import OpenAIStub, ToolCalls
from sessions.bus import Bus
from tests.conftest import ROOT, Client, Cluster

BOOKING = "tests.agents_fixtures:booking"
ASK = "book a table for two at seven"


async def _ask(port: int, sid: str) -> tuple[Client, dict[str, Any]]:
    c = await Client.open(port, session=sid)
    await c.recv()
    await c.send(type="send", id="m1", text=ASK)
    req = await c.until("approval_request", timeout=30)
    return c, req


async def _rejoin(port: int, sid: str) -> Client:
    """Another device (or a reload): connect and read the session from the start."""
    c = await Client.open(port, session=sid)
    await c.recv()
    await c.send(type="resume", after=0)
    return c


async def _answer(c: Client, ref: str) -> dict[str, Any]:
    """The ack or error frame that answers the frame with id ``ref``."""
    async with asyncio.timeout(15):
        while True:
            f = await c.recv()
            if (f["type"] == "ack" and f.get("id") == ref) or (
                    f["type"] == "error" and f.get("ref") == ref):
                return f


async def _seen(c: Client, kind: str, timeout: float = 30, **match: Any) -> dict[str, Any]:
    """A frame of ``kind`` received already (it may come before the ack), or the next."""
    for f in c.frames:
        if f["type"] == kind and all(f.get(k) == v for k, v in match.items()):
            return f
    return await c.until(kind, timeout, **match)


async def _log(bus: Bus, sid: str) -> list[dict[str, Any]]:
    rows = await bus.redis.xrange(bus.keys.log(sid), "-", "+")
    return [orjson.loads(f[b"e"]) for _, f in rows]


async def _memory(bus: Bus, sid: str) -> list[Any]:
    rows = await bus.redis.lrange(bus.keys.memory(sid), 0, -1)
    return [orjson.loads(r.partition(b"|")[2]) for r in rows]


async def test_approved_from_another_edge_after_a_reconnect(cluster: Cluster, bus: Bus) -> None:
    e1, e2 = cluster.edge(), cluster.edge()
    cluster.worker(BOOKING)
    c, req = await _ask(e1.port, "s-appr")
    assert req["name"] == "book_table" and req["arguments"] == {"people": 2, "time": "7:00"}
    assert req["turn"] == 1 and req["agent"] == "booking" and req["call_id"]
    assert time.time() + 500 < req["expires"] < time.time() + 700  # the default, 600 s
    await c.close()

    d = await _rejoin(e2.port, "s-appr")
    again = await d.until("approval_request")  # the card survives the reconnect
    assert again == req
    await d.send(type="approve", id="ap1", call_id=req["call_id"], approved=True)
    ack = await _answer(d, "ap1")
    assert ack["type"] == "ack" and ack["offset"] > req["offset"]
    result = await _seen(d, "approval_result")
    assert result == {"offset": ack["offset"], "type": "approval_result", "turn": 1,
                      "call_id": req["call_id"], "approved": True, "by": "alice"}
    reply = await _seen(d, "reply")
    assert reply["text"].startswith("Booked a table for 2 at 7:00.")
    await d.close()
    # the conversation holds the turn once: the question, the call, its output, the answer
    kinds = [i.get("type") or i.get("role") for i in await _memory(bus, "s-appr")]
    assert kinds == ["user", "function_call", "function_call_output", "message"], kinds
    assert not await bus.redis.exists(bus.keys.pause("s-appr"))
    # docs/protocol.md "Approval requests": the call, its request with the agent idle, then
    # the decision and the rest of the turn
    events = [(e["type"], e.get("state")) for e in await _log(bus, "s-appr")]
    assert events == [("user", None), ("turn_start", None), ("state", "thinking"),
                      ("state", "tool"), ("tool_call", None), ("approval_request", None),
                      ("state", "idle"), ("approval_result", None), ("tool_result", None),
                      ("state", "speaking"), ("state", "idle"), ("reply", None)], events


async def test_rejected_with_a_message(cluster: Cluster) -> None:
    edge = cluster.edge()
    cluster.worker(BOOKING)
    c, req = await _ask(edge.port, "s-rej")
    await c.send(type="approve", id="no", call_id=req["call_id"], approved=False,
                 message="not tonight")
    assert (await _answer(c, "no"))["type"] == "ack"
    result = await _seen(c, "approval_result")
    assert result["approved"] is False and result["message"] == "not tonight"
    reply = await _seen(c, "reply")
    assert "not booked" in reply["text"]
    output = await _seen(c, "tool_result")
    assert output["is_error"] is True and output["output"].endswith("The person said: not tonight")
    await c.close()


async def test_two_devices_at_once_give_one_decision(cluster: Cluster, bus: Bus) -> None:
    e1, e2 = cluster.edge(), cluster.edge()
    cluster.worker(BOOKING)
    c, req = await _ask(e1.port, "s-race")
    d = await _rejoin(e2.port, "s-race")
    await d.until("approval_request")
    await c.send(type="approve", id="unknown", call_id="call_nope", approved=True)
    err = await _answer(c, "unknown")
    assert err["type"] == "error" and err["code"] == "no_such_approval"
    assert err["retryable"] is False
    await asyncio.gather(
        c.send(type="approve", id="x", call_id=req["call_id"], approved=True),
        d.send(type="approve", id="y", call_id=req["call_id"], approved=False))
    answers = [await _answer(c, "x"), await _answer(d, "y")]
    assert sorted(a["type"] for a in answers) == ["ack", "error"], answers
    assert [a["code"] for a in answers if a["type"] == "error"] == ["no_such_approval"]
    won = next(a for a in answers if a["type"] == "ack") is answers[0]
    await _seen(c, "reply")
    results = [e for e in await _log(bus, "s-race") if e["type"] == "approval_result"]
    assert len(results) == 1 and results[0]["approved"] is won
    await c.close()
    await d.close()


async def test_timeout_rejects(cluster: Cluster) -> None:
    edge = cluster.edge()
    cluster.worker(BOOKING, AGENTIA_APPROVAL_TIMEOUT_S="2")
    c, req = await _ask(edge.port, "s-late")
    assert req["expires"] < time.time() + 3
    result = await c.until("approval_result", timeout=20)
    assert result["approved"] is False and result["by"] == "timeout"
    reply = await _seen(c, "reply")
    assert "not booked" in reply["text"]
    await c.send(type="approve", id="late", call_id=req["call_id"], approved=True)
    assert (await _answer(c, "late"))["code"] == "no_such_approval"
    await c.close()


async def test_a_killed_worker_s_paused_turn_completes_once(cluster: Cluster, bus: Bus) -> None:
    edge = cluster.edge()
    calls = ROOT / "test-output" / f"model-calls-{uuid.uuid4().hex[:6]}"
    env = {"AGENTIA_LEASE_MS": "1500", "MODEL_CALLS": str(calls)}
    w1 = cluster.worker(BOOKING, **env)
    c, req = await _ask(edge.port, "s-crash")
    assert _steps(calls) == 1  # the model asked for the tool once
    w1.kill(signal.SIGKILL)
    cluster.worker(BOOKING, **env)
    # the new worker takes the turn over (a lease later) and waits again, from the record
    await c.until("turn_start", timeout=30, attempt=2)
    await c.send(type="approve", id="ok", call_id=req["call_id"], approved=True)
    assert (await _answer(c, "ok"))["type"] == "ack"
    reply = await _seen(c, "reply")
    assert reply["text"].startswith("Booked a table for 2 at 7:00.")
    events = await _log(bus, "s-crash")
    kinds = [e["type"] for e in events]
    assert kinds.count("approval_request") == 1 and kinds.count("approval_result") == 1
    assert kinds.count("reply") == 1, kinds
    assert _steps(calls) == 2  # no second model call before the pause: one after it
    kinds = [i.get("type") or i.get("role") for i in await _memory(bus, "s-crash")]
    assert kinds == ["user", "function_call", "function_call_output", "message"], kinds
    await c.close()


async def test_cancel_while_waiting(cluster: Cluster, bus: Bus) -> None:
    edge = cluster.edge()
    cluster.worker(BOOKING)
    c, req = await _ask(edge.port, "s-stop")
    await c.send(type="cancel", id="stop", turn=req["turn"])
    await c.until("cancelling")
    await _seen(c, "cancelled", turn=req["turn"])
    await c.send(type="approve", id="after", call_id=req["call_id"], approved=True)
    assert (await _answer(c, "after"))["code"] == "no_such_approval"
    assert not await bus.redis.exists(bus.keys.pause("s-stop"))
    assert await _memory(bus, "s-stop") == []  # no call without its output is remembered
    await c.close()


def _books(messages: list[dict[str, Any]]) -> str | ToolCalls:
    """A model that books a table for every user message, then says what the tool said."""
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return f"the tool said: {last.get('content')}"
    return ToolCalls([("call_stub_b", "book_table", '{"people": 2, "time": "7:00"}')])


async def test_a_real_models_tool_call_stream_pauses_and_goes_on(cluster: Cluster,
                                                                  bus: Bus) -> None:
    stub = await OpenAIStub(_books).start()
    try:
        edge = cluster.edge()
        cluster.worker("sessions.demo:demo_agent", OPENAI_API_KEY="sk-test-not-real",
                       AGENTIA_MODEL_BASE_URL=stub.base_url, AGENTIA_MODEL="local-model")
        c, req = await _ask(edge.port, "s-stub")
        assert (req["call_id"], req["name"], req["arguments"]) == (
            "call_stub_b", "book_table", {"people": 2, "time": "7:00"})
        assert len(stub.requests) == 1
        await c.send(type="approve", id="ok", call_id="call_stub_b", approved=True)
        assert (await _answer(c, "ok"))["type"] == "ack"
        reply = await _seen(c, "reply")
        assert reply["text"] == "the tool said: Booked a table for 2 at 7:00."
        # the model got the conversation once: the question, its call, the tool's output
        sent = stub.requests[-1]["messages"]
        assert [m["role"] for m in sent if m["role"] != "system"] == [
            "user", "assistant", "tool"], sent
        assert len(stub.requests) == 2
        await c.close()
    finally:
        await stub.stop()


def _steps(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0
