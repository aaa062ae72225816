"""The Python client's agent-native events and ``approve`` (docs/protocol.md, issue 14): each
event parses to its class (unknown fields tolerated, bad ones defaulted), and ``approve``,
``agent=`` and ``stream`` against a small scripted WebSocket server on a free port (real
sockets, the edge's frames as the protocol documents them; the real edge is in
tests/e2e/test_client_agent.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from agentia_client import (
    AgentiaClient,
    AgentState,
    ApprovalRequest,
    ApprovalResult,
    Backoff,
    Cancelled,
    ConnectionLost,
    Handoff,
    Reply,
    RequestError,
    ServerClosed,
    ToolCall,
    ToolResult,
    UnknownEvent,
    Welcome,
    parse_event,
    parse_frame,
    session_url,
)

# ---------------------------------------------------------------- parsing


def test_tool_call_and_result() -> None:
    call = parse_event({"offset": 20, "type": "tool_call", "turn": 18, "call_id": "c1",
                        "name": "calculate", "arguments": {"expression": "6 * 7"},
                        "agent": "demo", "later_field": [1]})
    assert call == ToolCall(20, 18, "calculate", "c1", {"expression": "6 * 7"}, "demo", False)
    result = parse_event({"offset": 21, "type": "tool_result", "turn": 18, "call_id": "c1",
                          "name": "calculate", "output": "42", "is_error": False})
    assert result == ToolResult(21, 18, "c1", "calculate", "42", False)
    cut = parse_event({"offset": 22, "type": "tool_result", "turn": 18, "call_id": "c2",
                       "name": "fetch", "output": "x" * 4096, "is_error": True,
                       "truncated": True})
    assert isinstance(cut, ToolResult) and cut.truncated and cut.is_error


def test_private_tools_carry_only_their_name() -> None:
    call = parse_event({"offset": 5, "type": "tool_call", "turn": 3, "call_id": "p",
                        "name": "lookup_account", "agent": "demo", "private": True})
    assert isinstance(call, ToolCall) and call.private and call.arguments == {}
    result = parse_event({"offset": 6, "type": "tool_result", "turn": 3, "call_id": "p",
                          "name": "lookup_account", "is_error": False, "private": True})
    assert isinstance(result, ToolResult) and result.private and result.output is None


def test_the_older_tool_event_still_parses() -> None:
    assert parse_event({"offset": 20, "type": "tool", "turn": 18,
                        "name": "current_time"}) == ToolCall(20, 18, "current_time")


def test_state_handoff_and_agent_on_replies() -> None:
    assert parse_event({"offset": 7, "type": "state", "turn": 6, "state": "thinking",
                        "agent": "triage"}) == AgentState(7, 6, "thinking", "triage")
    voice = parse_event({"offset": 9, "type": "state", "state": "listening", "agent": "demo"})
    assert voice == AgentState(9, None, "listening", "demo")
    assert parse_event({"offset": 8, "type": "handoff", "turn": 6, "from": "triage",
                        "to": "demo"}) == Handoff(8, 6, "triage", "demo")
    reply = parse_event({"offset": 10, "type": "reply", "turn": 6, "text": "hi",
                         "agent": "demo"})
    assert reply == Reply(10, 6, "hi", "demo")
    assert parse_event({"offset": 11, "type": "cancelled", "turn": 6, "text": "",
                        "agent": "demo"}) == Cancelled(11, 6, "", "demo")
    assert parse_event({"offset": 12, "type": "reply", "turn": 6, "text": "x"}).agent is None


def test_approval_request_and_result() -> None:
    req = parse_event({"offset": 30, "type": "approval_request", "turn": 28, "call_id": "b1",
                       "name": "book_table", "arguments": {"people": 2, "time": "19:00"},
                       "agent": "demo", "expires": 1767226200.5})
    assert req == ApprovalRequest(30, 28, "b1", "book_table", {"people": 2, "time": "19:00"},
                                  "demo", 1767226200.5)
    res = parse_event({"offset": 31, "type": "approval_result", "turn": 28, "call_id": "b1",
                       "approved": True, "by": "alice", "message": "go"})
    assert res == ApprovalResult(31, 28, "b1", True, "alice", "go")
    timeout = parse_event({"offset": 32, "type": "approval_result", "turn": 28,
                           "call_id": "b2", "approved": False, "by": "timeout"})
    assert isinstance(timeout, ApprovalResult) and timeout.message is None


def test_bad_fields_default_and_welcome_agent() -> None:
    bad = parse_event({"offset": 3, "type": "approval_request", "turn": "x", "call_id": 4,
                       "arguments": "[not an object]", "expires": True, "approved": "yes"})
    assert bad == ApprovalRequest(3, 0, "", "", {}, None, None)
    assert parse_event({"offset": 4, "type": "approval_result", "approved": "yes"}) == \
        ApprovalResult(4, 0, "", False, "")
    assert parse_event({"offset": 5, "type": "state", "turn": True}) == AgentState(5, None, "")
    assert parse_event({"offset": 6, "type": "mcp_status"}) == UnknownEvent("mcp_status", 6)
    w = parse_frame({"type": "welcome", "session": "s", "epoch": "e", "offset": 0,
                     "agent": "triage"})
    assert isinstance(w, Welcome) and w.agent == "triage"


def test_agent_in_the_url_and_its_syntax() -> None:
    assert session_url("ws://h/v1/ws?agent=x", "s1", "demo") == \
        "ws://h/v1/ws?session=s1&agent=demo"
    assert session_url("ws://h/v1/ws?agent=x", None) == "ws://h/v1/ws?agent=x"
    for bad in ("Demo", "-a", "a" * 33, "a b"):
        with pytest.raises(ValueError, match="agent must match"):
            AgentiaClient("ws://h/v1/ws", "t", agent=bad)


# ---------------------------------------------------------------- against a scripted server

Handler = Callable[["Edge", dict[str, Any]], Awaitable[None]]


class Edge:
    """One connection of a scripted edge: sends ``welcome``, hands each frame to ``handler``."""

    def __init__(self, ws: ServerConnection, agent: str | None) -> None:
        self.ws = ws
        self.agent = agent
        self.offset = 0

    async def send(self, **frame: Any) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def event(self, **frame: Any) -> None:
        self.offset += 1
        await self.send(offset=self.offset, **frame)


@pytest.fixture
async def edge() -> AsyncIterator[tuple[str, list[dict[str, Any]], list[Handler], list[str]]]:
    """(url, frames received, [handler], request paths) of a scripted edge."""
    frames: list[dict[str, Any]] = []
    handler: list[Handler] = []
    paths: list[str] = []

    async def conn(ws: ServerConnection) -> None:
        assert ws.request is not None
        paths.append(ws.request.path)
        agent = "triage" if "agent=triage" in ws.request.path else "demo"
        if "agent=nobody" in ws.request.path:
            await ws.close(4504, "no such agent: nobody")
            return
        e = Edge(ws, agent)
        await e.send(type="welcome", protocol="agentia.v1", node="n1", session="s1",
                     epoch="e1", offset=0, agent=agent, limits={})
        async for raw in ws:
            frame = orjson.loads(raw)
            frames.append(frame)
            if frame["type"] == "ping":
                await e.send(type="pong", data=frame.get("data"))
            elif handler:
                await handler[0](e, frame)

    async with serve(conn, "127.0.0.1", 0, subprotocols=["agentia.v1"]) as server:  # type: ignore[list-item]
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/ws", frames, handler, paths


async def approvals(e: Edge, f: dict[str, Any]) -> None:
    """``approve`` of ``c1`` is acked, any other ``call_id`` is not pending."""
    if f["type"] != "approve":
        return
    if f["call_id"] == "c1":
        await e.send(type="ack", id=f["id"], offset=7, duplicate=False)
    else:
        await e.send(type="error", code="no_such_approval", message="no pending approval",
                     retryable=False, ref=f["id"])


async def test_approve_resolves_on_ack_and_raises_the_code_on_error(edge: Any) -> None:
    url, frames, handler, paths = edge
    handler.append(approvals)
    async with AgentiaClient(url, "tok", agent="triage") as client:
        assert client.agent == "triage" and "agent=triage" in paths[0]
        ack = await client.approve("c1", True, "fine by me")
        assert ack.offset == 7 and not ack.duplicate and ack.id
        with pytest.raises(RequestError) as err:
            await client.approve("c9", False)
        assert err.value.code == "no_such_approval"
        with pytest.raises(RequestError, match="bad_frame"):
            await client.approve("c1", True, "x" * 1001)  # refused before it is sent
        with pytest.raises(ValueError):
            await client.approve("", True)
    sent = [f for f in frames if f["type"] == "approve"]
    assert [(f["call_id"], f["approved"], f.get("message")) for f in sent] == [
        ("c1", True, "fine by me"), ("c9", False, None)]
    assert len({f["id"] for f in sent}) == 2 and all(1 <= len(f["id"]) <= 64 for f in sent)


async def test_approve_is_retried_after_rate_limited(edge: Any) -> None:
    url, frames, handler, _ = edge
    refused: list[str] = []

    async def limited(e: Edge, f: dict[str, Any]) -> None:
        if f["type"] == "approve" and not refused:
            refused.append(f["id"])
            await e.send(type="error", code="rate_limited", message="slow down",
                         retryable=True, ref=f["id"], retry_after_ms=50)
        elif f["type"] == "approve":
            await e.send(type="ack", id=f["id"])

    handler.append(limited)
    async with AgentiaClient(url, "tok") as client:
        await client.approve("c1", False)
        assert client.agent == "demo"
    sent = [f for f in frames if f["type"] == "approve"]
    assert len(sent) == 2 and sent[0]["id"] == sent[1]["id"] == refused[0]


async def test_an_approve_in_flight_when_the_connection_drops_is_not_resent(edge: Any) -> None:
    url, frames, handler, _ = edge

    async def drop(e: Edge, f: dict[str, Any]) -> None:
        if f["type"] == "approve":
            await e.ws.close(1012, "restart")

    handler.append(drop)
    async with AgentiaClient(url, "tok", backoff=Backoff(base=0.05, cap=0.1)) as client:
        with pytest.raises(ConnectionLost):
            await client.approve("c1", True)
        await asyncio.sleep(0.3)  # reconnected meanwhile
        assert client.stats["connections"] >= 2
    assert len([f for f in frames if f["type"] == "approve"]) == 1


async def test_an_unknown_agent_stops_the_client(edge: Any) -> None:
    url, _, _, _ = edge
    client = AgentiaClient(url, "tok", agent="nobody")
    with pytest.raises(ServerClosed) as err:
        await client.connect()
    assert err.value.code == 4504 and "nobody" in err.value.reason


async def test_stream_yields_the_agent_events_and_approve_answers_mid_turn(edge: Any) -> None:
    url, _, handler, _ = edge

    async def turn(e: Edge, f: dict[str, Any]) -> None:
        if f["type"] == "send":
            await e.send(type="ack", id=f["id"], offset=1, duplicate=False)
            await e.event(type="user", id=f["id"], text=f["text"], source="chat", user="al",
                          ts=1.0)
            await e.event(type="turn_start", turn=1, attempt=1)
            await e.event(type="state", turn=1, state="thinking", agent="triage")
            await e.event(type="handoff", turn=1, **{"from": "triage", "to": "demo"})
            await e.event(type="state", turn=1, state="tool", agent="demo")
            await e.event(type="tool_call", turn=1, call_id="b1", name="book_table",
                          arguments={"people": 2, "time": "19:00"}, agent="demo")
            await e.event(type="approval_request", turn=1, call_id="b1", name="book_table",
                          arguments={"people": 2, "time": "19:00"}, agent="demo",
                          expires=2e9)
        elif f["type"] == "approve":
            await e.send(type="ack", id=f["id"])
            await e.event(type="approval_result", turn=1, call_id=f["call_id"],
                          approved=f["approved"], by="al")
            await e.event(type="tool_result", turn=1, call_id="b1", name="book_table",
                          output="booked", is_error=False)
            await e.event(type="state", turn=1, state="speaking", agent="demo")
            await e.send(type="chunk", turn=1, attempt=1, seq=1, text="Booked a table")
            await e.event(type="state", turn=1, state="idle", agent="demo")
            await e.event(type="reply", turn=1, text="Booked a table", agent="demo")

    handler.append(turn)
    seen: list[Any] = []
    async with AgentiaClient(url, "tok") as client:
        async with asyncio.timeout(10):
            async for ev in client.stream("book a table for two at seven"):
                seen.append(ev)
                if isinstance(ev, ApprovalRequest):
                    await client.approve(ev.call_id, True)
    kinds = [type(e).__name__ for e in seen]
    assert kinds == ["UserMessage", "TurnStart", "AgentState", "Handoff", "AgentState",
                     "ToolCall", "ApprovalRequest", "ApprovalResult", "ToolResult",
                     "AgentState", "Chunk", "AgentState", "Reply"]
    assert seen[3] == Handoff(4, 1, "triage", "demo")
    assert seen[-1].agent == "demo" and seen[7].approved is True
