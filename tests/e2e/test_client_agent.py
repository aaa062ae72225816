"""The Python client SDK's agent-native events and ``approve`` against real edges, a worker with
the demo agents (``demo`` and ``triage``, the demo model) and Redis, once per edge transport:
a booking paused for approval on one edge and approved from another client on another edge,
a tool call with its arguments and result, the agent's states, a handoff, ``welcome.agent``,
and the refusals of ``?agent=`` (4504 unknown agent, 4505 another agent's session)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from agentia_client import (
    AgentiaClient,
    AgentState,
    ApprovalRequest,
    ApprovalResult,
    Backoff,
    Handoff,
    Reply,
    RequestError,
    ServerClosed,
    ToolCall,
    ToolResult,
    parse_event,
)
from tests.conftest import Cluster, Proc, token

DEMO = "sessions.demo:demo_agent"
AGENTS = ["--agent", f"demo={DEMO}", "--agent", "triage=sessions.demo:triage_agent"]


def demo_and_triage(cluster: Cluster) -> Proc:
    """A worker with the two demo agents, registered as ``demo`` (the default) and ``triage``."""
    p = Proc(["worker", *AGENTS], cluster.env, "AGENTIA_WORKER_READY")
    cluster.procs.append(p)
    return p


def url(p: Proc) -> str:
    return f"ws://127.0.0.1:{p.port}/v1/ws"


def client(edge: Proc, **kw: Any) -> AgentiaClient:
    kw.setdefault("backoff", Backoff(base=0.05, cap=0.5, max_first_attempts=3))
    return AgentiaClient(url(edge), token("agent-alice"), **kw)


async def test_a_paused_booking_is_approved_from_another_edge(cluster: Cluster) -> None:
    edges = [cluster.edge(), cluster.edge()]
    cluster.worker(DEMO)
    a = client(edges[0], session="book-1")
    await a.connect()
    request: ApprovalRequest | None = None
    async with asyncio.timeout(60), contextlib.aclosing(
            a.stream("book a table for two at seven")) as events:
        async for ev in events:
            if isinstance(ev, ApprovalRequest):
                request = ev
                break
    await a.close()
    assert request is not None and request.name == "book_table"
    assert request.arguments == {"people": 2, "time": "7:00"}
    assert request.expires is not None and request.agent

    # another client, on the other edge, sees the open request in the log and approves it
    b = client(edges[1], session="book-1", after=0)
    await b.connect()
    seen: list[Any] = []
    async with asyncio.timeout(60):
        async for item in b.events():
            assert isinstance(item, dict)
            ev = parse_event(item)
            seen.append(ev)
            if isinstance(ev, ApprovalRequest):
                ack = await b.approve(ev.call_id, True, "for two, please")
                assert ack.offset > ev.offset
            if isinstance(ev, Reply):
                break
    results = [e for e in seen if isinstance(e, ApprovalResult)]
    assert [(r.call_id, r.approved, r.by, r.message) for r in results] == [
        (request.call_id, True, "agent-alice", "for two, please")]
    assert [e.call_id for e in seen if isinstance(e, ApprovalRequest)] == [request.call_id]
    assert "Booked a table for 2 at 7:00" in seen[-1].text
    with pytest.raises(RequestError) as err:  # answered: nothing pending any more
        await b.approve(request.call_id, False)
    assert err.value.code == "no_such_approval"
    await b.close()


async def test_tool_call_result_states_and_the_reply_s_agent(cluster: Cluster) -> None:
    edge = cluster.edge()
    cluster.worker(DEMO)
    async with client(edge) as c:
        got = [ev async for ev in c.stream("what is 6 * 7")]
    calls = [e for e in got if isinstance(e, ToolCall)]
    assert [(e.name, e.arguments) for e in calls] == [("calculate", {"expression": "6 * 7"})]
    results = [e for e in got if isinstance(e, ToolResult)]
    assert [(r.call_id, r.is_error) for r in results] == [(calls[0].call_id, False)]
    assert "42" in (results[0].output or "")
    states = [e.state for e in got if isinstance(e, AgentState)]
    assert states[0] == "thinking" and "tool" in states and states[-1] == "idle", states
    reply = got[-1]
    assert isinstance(reply, Reply) and "42" in reply.text and reply.agent == calls[0].agent


async def test_triage_hands_off_and_agent_refusals(cluster: Cluster) -> None:
    edge = cluster.edge()
    demo_and_triage(cluster)
    async with client(edge, session="default-1") as c:
        assert c.agent == "demo"  # the first registered agent is the default
    async with client(edge, agent="triage", session="tri-1") as c:
        assert c.agent == "triage"
        got = [ev async for ev in c.stream("what is 6 * 7")]
    handoffs = [e for e in got if isinstance(e, Handoff)]
    assert len(handoffs) == 1 and "triage" in handoffs[0].from_agent.lower()
    assert isinstance(got[-1], Reply) and got[-1].agent == handoffs[0].to_agent
    with pytest.raises(ServerClosed) as err:
        await client(edge, agent="nobody").connect()
    assert err.value.code == 4504
    with pytest.raises(ServerClosed) as err:
        await client(edge, agent="demo", session="tri-1").connect()
    assert err.value.code == 4505


async def test_a_result_without_approval_is_never_seen_before_its_request(
        cluster: Cluster) -> None:
    """Rejecting works the same way, and the events come in the documented order."""
    edge = cluster.edge()
    cluster.worker(DEMO)
    order: list[str] = []
    async with client(edge) as c, asyncio.timeout(60):
        async for ev in c.stream("book a table for two at seven"):
            order.append(type(ev).__name__)
            if isinstance(ev, ApprovalRequest):
                await c.approve(ev.call_id, False)
            if isinstance(ev, ApprovalResult):
                assert ev.approved is False
    assert order.index("ApprovalRequest") < order.index("ApprovalResult") < order.index("Reply")
    assert order[-1] == "Reply"
