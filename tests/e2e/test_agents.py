"""Several agents per deployment, against real processes (edge, workers, control plane,
Redis): the registry from a TOML file, ``GET /v1/agents``, ``?agent=`` on the WebSocket URL
(welcome.agent, 4504, 4505, 400) and per-agent turn streams (a worker runs only its agents'
turns). The agents are tests/agents_fixtures.py's ``alpha`` and ``beta``, whose replies say
which of them ran the turn."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sessions.bus import Bus
from sessions.keys import shard_for
from tests.conftest import Client, Cluster, Proc, token
from tests.e2e.test_api import get

AGENTS = """
[[agents]]
name = "alpha"
agent = "tests.agents_fixtures:alpha"
description = "The first test agent."
private_tools = ["calculate"]

[[agents]]
name = "beta"
agent = "tests.agents_fixtures:beta"
"""


def _worker(cluster: Cluster, path: Path, *only: str) -> Proc:
    args = ["worker", "--agents", str(path)]
    for name in only:
        args += ["--only", name]
    p = Proc(args, cluster.env, "AGENTIA_WORKER_READY")
    cluster.procs.append(p)
    return p


@pytest.fixture
def agents_file(tmp_path: Path) -> Path:
    path = tmp_path / "agents.toml"
    path.write_text(AGENTS)
    return path


async def _open(port: int, query: str, user: str = "ann") -> Client:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/v1/ws?{query}",
                                  additional_headers={"Authorization": f"Bearer {token(user)}"})
    return Client(ws)


async def _refused(port: int, query: str) -> tuple[int, str]:
    c = await _open(port, query)
    with pytest.raises(ConnectionClosed) as info:
        await c.recv(5)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


async def _ask(c: Client, text: str, mid: str) -> str:
    await c.send(type="send", id=mid, text=text)
    reply = await c.until("reply", timeout=20)
    return str(reply["text"])


async def test_registry_listing_and_sessions_per_agent(cluster: Cluster,
                                                       agents_file: Path) -> None:
    _worker(cluster, agents_file)
    edge, api = cluster.edge(), cluster.api()
    status, body = await get(api, "/v1/agents")
    assert status == 401  # like the other read endpoints
    status, body = await get(api, "/v1/agents", token("ann"))
    assert status == 200
    assert [(a["name"], a["default"]) for a in body["agents"]] == [
        ("alpha", True), ("beta", False)]
    alpha, beta = body["agents"]
    assert alpha["description"] == "The first test agent."
    assert {t["name"]: t["private"] for t in alpha["tools"]} == {
        "current_time": False, "calculate": True}
    assert "arithmetic" in next(t for t in alpha["tools"]
                                if t["name"] == "calculate")["description"]
    assert beta == {"name": "beta", "description": "The second test agent.", "tools": [],
                    "default": False}
    status, schema = await get(api, "/openapi.json")
    assert "/v1/agents" in schema["paths"]

    # a session picks its agent at creation; none named: the first
    b = await _open(edge.port, "session=sb&agent=beta")
    assert (await b.recv())["agent"] == "beta"
    assert (await _ask(b, "hello", "1")).startswith("[beta] ")
    d = await Client.open(edge.port, user="ann", session="sd")
    assert (await d.recv())["agent"] == "alpha"
    assert (await _ask(d, "hello", "1")).startswith("[alpha] ")
    await b.close()
    # the agent is the session's: reopened without ?agent= (and from memory) it is still beta
    b = await Client.open(edge.port, user="ann", session="sb")
    welcome = await b.recv()
    assert welcome["agent"] == "beta"
    assert (await _ask(b, "what did i say", "2")).startswith("[beta] Before this you said")
    await b.close()
    await d.close()

    assert await _refused(edge.port, "session=sb&agent=alpha") == (
        4505, "this session talks to agent beta")
    assert await _refused(edge.port, "session=new1&agent=nope") == (4504, "no such agent: nope")
    assert await _refused(edge.port, "agent=nope") == (4504, "no such agent: nope")
    for bad in ("Beta", "a%20b", "-x", "x" * 33):
        with pytest.raises(InvalidStatus) as info:
            await _open(edge.port, f"agent={bad}")
        assert info.value.response.status_code == 400
        assert info.value.response.body == b"agent must match [a-z0-9][a-z0-9_-]{0,31}\n"
    # nothing of the refused sessions was created
    c = await _open(edge.port, "session=new1&agent=beta")
    assert (await c.recv())["offset"] == 0
    await c.close()


async def test_a_worker_runs_only_its_agents_turns(cluster: Cluster, agents_file: Path) -> None:
    _worker(cluster, agents_file, "alpha")
    betas = _worker(cluster, agents_file, "beta")
    edge = cluster.edge()
    a = await _open(edge.port, "session=wa&agent=alpha")
    b = await _open(edge.port, "session=wb&agent=beta")
    assert (await a.recv())["agent"] == "alpha" and (await b.recv())["agent"] == "beta"
    assert (await _ask(b, "hello", "1")).startswith("[beta] ")
    betas.stop()  # beta's only worker: its registry entry lives on for AGENT_TTL
    await b.send(type="send", id="2", text="anyone there?")
    await b.until("ack")
    assert (await _ask(a, "hello", "1")).startswith("[alpha] ")  # alpha's worker is idle...
    with pytest.raises(TimeoutError):  # ...and leaves beta's turn alone
        await b.until("reply", timeout=3)
    _worker(cluster, agents_file, "beta")
    reply = await b.until("reply", timeout=20)
    assert reply["text"].startswith("[beta] You said: anyone there?")
    await asyncio.gather(a.close(), b.close())


async def test_turns_from_before_the_registry_go_to_the_default_agent(
        cluster: Cluster, agents_file: Path, bus: Bus) -> None:
    """A session created and given a turn while no agent was registered (as a single-agent
    deployment's sessions before the upgrade): its turn waits in the ``default`` shards and
    the first agent's workers run it; the session then belongs to that agent."""
    await bus.open_session("old", "ann")
    await bus.submit("old", "c1", "hello from before", user="ann")
    assert await bus.redis.xlen(bus.keys.inbound(shard_for("old", bus.shards))) == 1
    _worker(cluster, agents_file, "beta")  # not the default agent: leaves it alone
    await asyncio.sleep(2)
    assert await _reply_of(bus, "old") is None
    _worker(cluster, agents_file, "alpha")
    text = None
    for _ in range(200):  # 20 s
        if (text := await _reply_of(bus, "old")) is not None:
            break
        await asyncio.sleep(0.1)
    assert text is not None and text.startswith("[alpha] You said: hello from before")
    edge = cluster.edge()
    c = await Client.open(edge.port, user="ann", session="old")
    assert (await c.recv())["agent"] == "alpha"  # the default, taken when next opened
    await c.close()


async def _reply_of(bus: Bus, sid: str) -> str | None:
    replay = await bus.replay(sid, 0, None)
    replies = [orjson.loads(e) for _, e in replay.events]
    return next((str(r["text"]) for r in replies if r["type"] == "reply"), None)
