"""The service API (docs/backend.md) against real processes: Redis, two edges, a worker and
the control plane. Scopes, a posted message reaching two devices on two edges and the agent,
deletion of a session (sockets closed with 4506, even with a turn running) and of a user,
presence of devices on two edges."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import pytest
import websockets

from gateway.auth import mint
from sessions.bus import Bus
from tests.conftest import ROOT, TEST_SECRET, Client, Cluster, token
from tests.e2e.test_api import get


def service(*scopes: str, user: str = "backend") -> str:
    return mint(TEST_SECRET, user, 3600, scope=" ".join(scopes))


async def opened(port: int, user: str, session: str, ua: str | None = None) -> Client:
    """A device with a User-Agent, past its welcome."""
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/v1/ws?session={session}", compression=None,
        additional_headers={"Authorization": f"Bearer {token(user)}"}, user_agent_header=ua)
    c = Client(ws)
    assert (await c.recv())["type"] == "welcome"
    return c


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Edges write presence in batches every 0.5 s: wait for it, bounded."""
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.1)


async def closed_with(c: Client) -> int | None:
    """The close code the edge sent (reading past any frames still queued)."""
    try:
        async with asyncio.timeout(10):
            while True:
                await c.recv()
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


async def test_scopes_are_enforced(cluster: Cluster) -> None:
    edge, api = cluster.edge(), cluster.api()
    c = await opened(edge.port, "sam", "scoped")
    msg = {"text": "hi", "role": "operator"}
    post = "/v1/sessions/scoped/messages"
    assert (await get(api, post, None, "POST", msg))[0] == 401
    assert (await get(api, post, "not.a.token", "POST", msg))[0] == 401
    assert (await get(api, post, token("sam"), "POST", msg))[0] == 403  # owner, but no scope
    assert (await get(api, post, service("sessions:read"), "POST", msg))[0] == 403
    assert (await get(api, post, service("sessions:writes"), "POST", msg))[0] == 403  # unknown
    assert (await get(api, post, service("sessions:write"), "POST",
                      {"text": "", "role": "operator"}))[0] == 422
    assert (await get(api, post, service("sessions:write"), "POST",
                      {"text": "x" * 16_001, "role": "system"}))[0] == 422
    assert (await get(api, post, service("sessions:write"), "POST",
                      {"text": "x", "role": "user"}))[0] == 422
    for text in (" \n ", "\ud800"):  # whitespace only; a lone surrogate (JSON escape)
        assert (await get(api, post, service("sessions:write"), "POST",
                          {"text": text, "role": "system"}))[0] == 422
    assert (await get(api, "/v1/dev/token", None, "POST", {"user": "\ud800"}))[0] == 422
    assert (await get(api, "/v1/sessions/nope/messages", service("sessions:write"), "POST",
                      msg))[0] == 404
    assert (await get(api, "/v1/sessions/bad%20id/messages", service("sessions:write"), "POST",
                      msg))[0] == 400
    assert (await get(api, "/v1/users/sam", token("sam"), "DELETE"))[0] == 403
    assert (await get(api, "/v1/users/sam", service("sessions:write"), "DELETE"))[0] == 403
    assert (await get(api, "/v1/sessions/scoped", token("eve"), "DELETE"))[0] == 403
    assert (await get(api, "/v1/sessions/scoped/presence", token("eve")))[0] == 403
    assert (await get(api, "/v1/sessions/scoped/presence", service("sessions:write")))[0] == 403
    assert (await get(api, "/v1/sessions/scoped/presence", service("sessions:read")))[0] == 200
    assert (await get(api, "/v1/sessions/scoped/events", service("sessions:read")))[0] == 200
    assert (await get(api, "/v1/sessions/nope/presence", service("sessions:read")))[0] == 404
    schema = (await get(api, "/openapi.json"))[1]
    for path in ("/v1/sessions/{sid}/messages", "/v1/sessions/{sid}",
                 "/v1/users/{user}", "/v1/sessions/{sid}/presence"):
        assert path in schema["paths"], path
    await c.close()


async def test_a_posted_message_reaches_every_device_and_the_agent(cluster: Cluster) -> None:
    e1, e2, api = cluster.edge(), cluster.edge(), cluster.api()
    cluster.worker()
    a = await opened(e1.port, "una", "posted")
    b = await opened(e2.port, "una", "posted")
    await a.send(type="send", id="1", text="hello")
    await a.until("reply")
    status, body = await get(api, "/v1/sessions/posted/messages", service("sessions:write"),
                             "POST", {"text": "your refund is approved", "role": "operator"})
    assert status == 200 and body["session"] == "posted"
    for c in (a, b):
        m = await c.until("message")
        assert (m["offset"], m["role"], m["text"], m["by"]) == (
            body["offset"], "operator", "your refund is approved", "backend")
    await b.send(type="send", id="2", text="what did the operator say?")
    reply = await b.until("reply")
    assert "[operator backend] your refund is approved" in reply["text"]
    # the log keeps it: history shows it in order
    status, hist = await get(api, "/v1/sessions/posted/events", token("una"))
    kinds = [e["type"] for e in hist["events"]]
    assert kinds.index("message") < kinds.index("user", kinds.index("message"))
    await a.close()
    await b.close()


async def test_deleting_a_session_closes_its_sockets_and_its_running_turn(
        cluster: Cluster, bus: Bus) -> None:
    e1, e2, api = cluster.edge(), cluster.edge(), cluster.api()
    cluster.worker("tests.agents_fixtures:slow")
    a = await opened(e1.port, "vic", "doomed")
    b = await opened(e2.port, "vic", "doomed")
    await a.send(type="send", id="1", text="a long answer please, with many words in it")
    await a.until("chunk")  # the turn is running on the worker
    assert (await get(api, "/v1/sessions/doomed", token("eve"), "DELETE"))[0] == 403
    assert (await get(api, "/v1/sessions/doomed", token("vic"), "DELETE"))[0] == 204
    assert await closed_with(a) == 4506
    assert await closed_with(b) == 4506
    assert (await get(api, "/v1/sessions/doomed/events", token("vic")))[0] == 404
    assert (await get(api, "/v1/sessions/doomed", token("vic"), "DELETE"))[0] == 404
    # the turn was running: whatever the worker still does, no key of the session comes back
    # (the slow model would have finished its reply within this window)
    pattern = f"{bus.keys.prefix}:{{doomed}}:*"
    for _ in range(30):
        assert await bus.redis.keys(pattern) == []
        await asyncio.sleep(0.1)
    # the id opens a new, empty session
    c = await Client.open(e1.port, user="vic", session="doomed")
    welcome = await c.recv()
    assert welcome["type"] == "welcome" and welcome["offset"] == 0
    await c.close()


async def test_deleting_a_user_deletes_all_their_sessions(cluster: Cluster) -> None:
    edge, api = cluster.edge(), cluster.api()
    cluster.worker()
    for sid in ("dora1", "dora2"):
        c = await opened(edge.port, "dora", sid)
        await c.send(type="send", id="1", text=f"hello from {sid}")
        await c.until("reply")
        await c.close()
    keep = await opened(edge.port, "other", "keepme")
    await keep.send(type="send", id="1", text="stay")
    await keep.until("reply")

    async def listed() -> bool:
        return len((await get(api, "/v1/sessions", token("dora")))[1]["sessions"]) == 2

    await eventually(listed)  # edges write the users' lists every 0.5 s
    status, body = await get(api, "/v1/users/dora", service("users:delete"), "DELETE")
    assert (status, body) == (200, {"user": "dora", "sessions": 2})
    for sid in ("dora1", "dora2"):
        assert (await get(api, f"/v1/sessions/{sid}/events", token("dora")))[0] == 404
    assert (await get(api, "/v1/sessions", token("dora")))[1]["sessions"] == []
    assert (await get(api, "/v1/sessions/keepme/events", token("other")))[0] == 200
    await keep.close()


async def test_presence_counts_devices_on_two_edges(cluster: Cluster) -> None:
    e1, e2, api = cluster.edge(), cluster.edge(), cluster.api()
    a = await opened(e1.port, "pia", "here", ua="phone/1.0")
    b = await opened(e2.port, "pia", "here", ua="laptop/2.0")
    seen: dict[str, Any] = {}

    async def count(n: int) -> bool:
        status, body = await get(api, "/v1/sessions/here/presence", token("pia"))
        seen.update(body)
        return status == 200 and body["connected"] == n

    await eventually(lambda: count(2))
    assert sorted(d["user_agent"] for d in seen["devices"]) == ["laptop/2.0", "phone/1.0"]
    assert len({d["node"] for d in seen["devices"]}) == 2
    assert seen["voice"] is False and seen["operator"] is False
    await a.close()
    await eventually(lambda: count(1))
    assert [d["user_agent"] for d in seen["devices"]] == ["laptop/2.0"]
    e2.kill()  # an edge that dies without draining: its devices stop counting
    await eventually(lambda: count(0), timeout=30)
    await b.close()


@pytest.mark.parametrize("scope", ["sessions:write users:delete", "sessions:wirte"])
def test_the_cli_mints_service_tokens(scope: str) -> None:
    out = subprocess.run([sys.executable, "-m", "launch.cli", "token", "--user", "svc",
                          "--scope", scope], capture_output=True, text=True, cwd=ROOT,
                         env={"AGENTIA_JWT_SECRET": TEST_SECRET, "PATH": "/usr/bin:/bin"},
                         timeout=60)
    if scope == "sessions:wirte":
        assert out.returncode != 0 and "unknown scope sessions:wirte" in out.stderr
        return
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "svc" and claims["scope"] == "sessions:write users:delete"
