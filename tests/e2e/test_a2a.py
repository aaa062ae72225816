"""A2A (docs/a2a.md) with the official a2a-sdk client against real processes: Redis, a worker
and the control plane, as ``agentia up`` runs them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.client.client import Client as A2AClient
from a2a.helpers.proto_helpers import get_artifact_text
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskState,
)

from launch.redis_server import RedisServer
from tests.conftest import Cluster, Proc, token

WAIT_S = 60.0


@pytest.fixture
def deployment(redis_server: RedisServer, prefix: str) -> Iterator[tuple[Cluster, Proc]]:
    c = Cluster(redis_server.url, prefix)
    c.worker("tests.agents_fixtures:slow", SLOW_DELAY="0.1")
    api = c.api(AGENTIA_MAX_SESSIONS_PER_USER="2")  # the edge's per-user limits apply
    yield c, api
    c.stop()


def _message(text: str, context: str = "") -> SendMessageRequest:
    return SendMessageRequest(message=Message(
        message_id=uuid.uuid4().hex, role=Role.ROLE_USER, parts=[Part(text=text)],
        context_id=context or uuid.uuid4().hex))


async def _client(api: Proc, user: str, *, streaming: bool, polling: bool = False,
                  agent: str = "") -> AsyncIterator[A2AClient]:
    base = f"http://127.0.0.1:{api.port}" + (f"/a2a/{agent}" if agent else "")
    async with httpx.AsyncClient(timeout=WAIT_S, headers={
            "Authorization": f"Bearer {token(user)}"}) as http:
        client = await create_client(base, ClientConfig(streaming=streaming, polling=polling,
                                                        httpx_client=http))
        yield client
        await client.close()


async def _card(api: Proc, path: str) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        for _ in range(100):  # the worker registers its agent within a moment of READY
            r = await http.get(f"http://127.0.0.1:{api.port}{path}")
            if r.status_code == 200:
                return r.json()  # type: ignore[no-any-return]
            await asyncio.sleep(0.1)
    raise AssertionError(f"{path}: {r.status_code} {r.text}")


async def test_cards_and_a_completed_task(deployment: tuple[Cluster, Proc]) -> None:
    _, api = deployment
    card = await _card(api, "/.well-known/agent-card.json")
    name = str(card["name"])  # the registry's name for the worker's one agent
    assert {s["id"] for s in card["skills"]} >= {"calculate"}  # type: ignore[attr-defined]
    assert "bearer" in card["securitySchemes"]  # type: ignore[operator]
    old = await _card(api, "/.well-known/agent.json")
    assert old["name"] == name and str(old["url"]).endswith("/a2a")  # the 0.3 card's fields
    own = await _card(api, f"/a2a/{name}/.well-known/agent-card.json")
    assert own["name"] == name
    assert own["supportedInterfaces"][0]["url"].endswith(f"/a2a/{name}")  # type: ignore[index]
    async with httpx.AsyncClient() as http:  # no token: 401, as the rest of the control plane
        r = await http.post(f"http://127.0.0.1:{api.port}/a2a", json={})
        assert r.status_code == 401
        r = await http.get(f"http://127.0.0.1:{api.port}/a2a/nobody/.well-known/agent.json")
        assert r.status_code == 404
        r = await http.post(f"http://127.0.0.1:{api.port}/a2a", content=b"x" * 300_000,
                            headers={"Authorization": f"Bearer {token('ada')}"})
        assert r.status_code == 413

    async for client in _client(api, "ada", streaming=False):
        req = _message("what is 6 * 7")
        got = [e async for e in client.send_message(req)]
        task = got[-1].task
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
        assert "42" in get_artifact_text(task.artifacts[0])
        again = await client.get_task(GetTaskRequest(id=task.id))
        assert again.status.state == TaskState.TASK_STATE_COMPLETED
        sid = f"a2a:{task.context_id}"
    # the turn is in the session log, as a chat turn is
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        r = await http.get(f"http://127.0.0.1:{api.port}/v1/sessions/{sid}/events",
                           headers={"Authorization": f"Bearer {token('ada')}"})
        events = r.json()["events"]
        assert [e["source"] for e in events if e["type"] == "user"] == ["a2a"]
        assert any(e["type"] == "reply" and "42" in e["text"] for e in events)
        # another user neither reads it nor gets its task
        r = await http.get(f"http://127.0.0.1:{api.port}/v1/sessions/{sid}/events",
                           headers={"Authorization": f"Bearer {token('bob')}"})
        assert r.status_code == 403
        # the A2A routes are in the control plane's OpenAPI schema
        paths = (await http.get(f"http://127.0.0.1:{api.port}/openapi.json")).json()["paths"]
        assert {"/a2a", "/a2a/{agent}", "/.well-known/agent-card.json"} <= set(paths)
        assert "requestBody" in paths["/a2a"]["post"]
        # the context is in its user's session list, as a chat session is
        r = await http.get(f"http://127.0.0.1:{api.port}/v1/sessions",
                           headers={"Authorization": f"Bearer {token('ada')}"})
        assert sid in [row["id"] for row in r.json()["sessions"]]
        # the 0.3 method names on the same endpoint, as docs/a2a.md's curl example sends them
        r = await http.post(f"http://127.0.0.1:{api.port}/a2a", json={
            "jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": {
                "role": "user", "messageId": "m1", "contextId": task.context_id,
                "parts": [{"kind": "text", "text": "what is 2 * 21"}]}}},
            headers={"Authorization": f"Bearer {token('ada')}"})
        result = r.json()["result"]
        assert result["status"]["state"] == "completed", result
        assert "42" in result["artifacts"][0]["parts"][0]["text"]
    async for client in _client(api, "ada", streaming=False):  # a 2nd context; no 3rd
        task2 = [e async for e in client.send_message(_message("hello"))][-1].task
        assert task2.status.state == TaskState.TASK_STATE_COMPLETED
        long = [e async for e in client.send_message(_message("x" * 16_001))][-1].task
        assert long.status.state == TaskState.TASK_STATE_FAILED
        assert "16000 characters" in long.status.message.parts[0].text
        task3 = [e async for e in client.send_message(_message("hello"))][-1].task
        assert task3.status.state == TaskState.TASK_STATE_FAILED
        assert "too_many_sessions" in task3.status.message.parts[0].text
    async for client in _client(api, "bob", streaming=False):
        with pytest.raises(Exception, match=r"(?i)not found"):
            await client.get_task(GetTaskRequest(id=task.id))


async def test_stream_and_cancel(deployment: tuple[Cluster, Proc]) -> None:
    _, api = deployment
    name = str((await _card(api, "/.well-known/agent-card.json"))["name"])
    async for client in _client(api, "cy", streaming=True, agent=name):
        states, pieces, final = [], [], ""
        async with asyncio.timeout(WAIT_S):
            async for e in client.send_message(_message("what is 6 * 7")):
                if e.HasField("status_update"):
                    states.append(e.status_update.status.state)
                if e.HasField("artifact_update"):
                    text = get_artifact_text(e.artifact_update.artifact)
                    if e.artifact_update.append or not e.artifact_update.last_chunk:
                        pieces.append(text)
                    else:
                        final = text
        assert states[0] == TaskState.TASK_STATE_WORKING
        assert states[-1] == TaskState.TASK_STATE_COMPLETED
        # streamed while the turn ran, not only at its end (the partial buffer grows every
        # tenth piece: the demo's short reply streams one or two chunks before its end)
        assert pieces and "".join(pieces), pieces
        assert "42" in final and final.startswith("".join(pieces)[:10])

    async for client in _client(api, "cy", streaming=False, polling=True):
        first = [e async for e in client.send_message(_message(
            "tell me a long story about the sea and the ships and the harbour"))]
        task: Task = first[-1].task
        async with asyncio.timeout(WAIT_S):
            while task.status.state != TaskState.TASK_STATE_WORKING or not task.artifacts:
                await asyncio.sleep(0.1)
                task = await client.get_task(GetTaskRequest(id=task.id))
            done = await client.cancel_task(CancelTaskRequest(id=task.id))
            assert done.status.state == TaskState.TASK_STATE_CANCELED
        sid = f"a2a:{task.context_id}"
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        async with asyncio.timeout(WAIT_S):
            while True:  # the turn itself is cancelled on the bus: its log says so
                r = await http.get(f"http://127.0.0.1:{api.port}/v1/sessions/{sid}/events",
                                   headers={"Authorization": f"Bearer {token('cy')}"})
                if any(e["type"] == "cancelled" for e in r.json()["events"]):
                    break
                await asyncio.sleep(0.2)


async def test_an_agent_calls_a_remote_a2a_agent(redis_server: RedisServer, prefix: str,
                                                 tmp_path: Path) -> None:
    """Agentia to Agentia: deployment A's agent ``relay`` has deployment B's default agent as
    the tool ``peer`` (``[[agents.a2a]]``); two control planes, two key prefixes."""
    b = Cluster(redis_server.url, prefix + "b")
    a = Cluster(redis_server.url, prefix)
    try:
        b.worker("tests.agents_fixtures:fast")
        api_b = b.api()
        remote = str((await _card(api_b, "/.well-known/agent-card.json"))["name"])
        agents = tmp_path / "agents.toml"
        agents.write_text(f'''
[[agents]]
name = "relay"
agent = "tests.agents_fixtures:relay"
[[agents.a2a]]
name = "peer"
url = "http://127.0.0.1:{api_b.port}/a2a/{remote}"
token = "{token('deployment-a')}"
description = "Deployment B's agent."
timeout_s = 30
''')
        a.procs.append(Proc(["worker", "--agents", str(agents)], a.env, "AGENTIA_WORKER_READY"))
        api_a = a.api()
        card = await _card(api_a, "/a2a/relay/.well-known/agent-card.json")
        assert [s["id"] for s in card["skills"]] == ["peer"]  # type: ignore[attr-defined]
        async for client in _client(api_a, "dora", streaming=False, agent="relay"):
            task = [e async for e in client.send_message(_message("what is 6 * 7"))][-1].task
            assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
            reply = get_artifact_text(task.artifacts[0])
            assert reply.startswith("The peer says:") and "42" in reply, reply
        # relay has no calculator: the 42 came from B's agent, through A's turn's tool call
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            r = await http.get(f"http://127.0.0.1:{api_a.port}/v1/sessions/a2a:"
                               f"{task.context_id}/events",
                               headers={"Authorization": f"Bearer {token('dora')}"})
            events = r.json()["events"]
            assert [e["name"] for e in events if e["type"] == "tool_call"] == ["peer"]
            [out] = [e["output"] for e in events if e["type"] == "tool_result"]
            assert "42" in out
    finally:
        a.stop()
        b.stop()


async def test_every_replica_knows_every_task(deployment: tuple[Cluster, Proc]) -> None:
    """The task records are in Redis (control/a2a_store.py): a second control plane answers
    tasks/get for a task the first one runs and cancels it (the turn on the bus too, though
    another replica follows it), and a control plane started after both stopped still
    knows it; another user does not."""
    c, a = deployment
    b = c.api(AGENTIA_MAX_SESSIONS_PER_USER="2")
    async for client in _client(a, "di", streaming=False, polling=True):
        first = [e async for e in client.send_message(_message(
            "tell me a long story about the sea and the ships and the harbour"))]
        task: Task = first[-1].task
    sid = f"a2a:{task.context_id}"
    async for client in _client(b, "di", streaming=False, polling=True):
        async with asyncio.timeout(WAIT_S):
            task = await client.get_task(GetTaskRequest(id=task.id))
            while task.status.state != TaskState.TASK_STATE_WORKING or not task.artifacts:
                await asyncio.sleep(0.1)
                task = await client.get_task(GetTaskRequest(id=task.id))
            done = await client.cancel_task(CancelTaskRequest(id=task.id))
            assert done.status.state == TaskState.TASK_STATE_CANCELED
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        async with asyncio.timeout(WAIT_S):
            while True:  # cancelled on the bus by the replica that did not start it
                r = await http.get(f"http://127.0.0.1:{b.port}/v1/sessions/{sid}/events",
                                   headers={"Authorization": f"Bearer {token('di')}"})
                events = r.json()["events"]
                if any(e["type"] == "cancelled" for e in events):
                    break
                await asyncio.sleep(0.2)
        assert not any(e["type"] == "reply" for e in events)
    await asyncio.sleep(1)  # the first replica follows the turn's end to its own task events
    for p in (a, b):
        p.terminate()
        p.stop()
    fresh = c.api()
    async for client in _client(fresh, "di", streaming=False):
        again = await client.get_task(GetTaskRequest(id=task.id))
        assert again.status.state == TaskState.TASK_STATE_CANCELED
    async for client in _client(fresh, "eve", streaming=False):
        with pytest.raises(Exception, match=r"(?i)not found"):
            await client.get_task(GetTaskRequest(id=task.id))
    for p in (a, b):
        assert "Traceback" not in log_of(p)


def log_of(p: Proc) -> str:
    return Path(p.log.name).read_text(errors="replace")


async def _events(api: Proc, user: str, sid: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        r = await http.get(f"http://127.0.0.1:{api.port}/v1/sessions/{sid}/events",
                           headers={"Authorization": f"Bearer {token(user)}"})
        return r.json()["events"]  # type: ignore[no-any-return]


async def test_a_task_whose_control_plane_died_is_settled_from_its_turn(
        deployment: tuple[Cluster, Proc]) -> None:
    """Control plane A takes a task and is killed (SIGKILL) while its turn runs; the turn goes
    on on the bus and ends. ``tasks/get`` on control plane B, once A's lease on the task has
    lapsed, completes the task from the session log: the reply event's text is the artifact."""
    c, a = deployment
    b = c.api(AGENTIA_MAX_SESSIONS_PER_USER="2")
    async for client in _client(a, "fay", streaming=False, polling=True):
        task: Task = [e async for e in client.send_message(_message(
            "tell me a long story about the sea and the ships and the harbour"))][-1].task
        async with asyncio.timeout(WAIT_S):
            while task.status.state != TaskState.TASK_STATE_WORKING:
                await asyncio.sleep(0.1)
                task = await client.get_task(GetTaskRequest(id=task.id))
    a.kill()  # no shutdown: A's task stays `working` in the store, its lease not renewed
    sid = f"a2a:{task.context_id}"
    async for client in _client(b, "fay", streaming=False):
        async with asyncio.timeout(WAIT_S):
            while task.status.state == TaskState.TASK_STATE_WORKING:
                await asyncio.sleep(0.2)
                task = await client.get_task(GetTaskRequest(id=task.id))
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
        [reply] = [e["text"] for e in await _events(b, "fay", sid) if e["type"] == "reply"]
        assert get_artifact_text(task.artifacts[0]) == reply and reply
        assert [a.artifact_id for a in task.artifacts] == ["reply"]
        assert "turn" in task.history[-1].parts[0].text  # the working status, now history
        again = await client.get_task(GetTaskRequest(id=task.id))  # stored, not recomputed
        assert again.status.state == TaskState.TASK_STATE_COMPLETED
        assert again.status.timestamp == task.status.timestamp
    assert "Traceback" not in log_of(b)


STORY = "tell me a long story about the sea and the ships and the harbour"


async def _working(api: Proc, user: str) -> Task:
    """A task taken by ``api`` (not waited for), once it is working on its turn."""
    async for client in _client(api, user, streaming=False, polling=True):
        task: Task = [e async for e in client.send_message(_message(STORY))][-1].task
        async with asyncio.timeout(WAIT_S):
            while task.status.state != TaskState.TASK_STATE_WORKING:
                await asyncio.sleep(0.1)
                task = await client.get_task(GetTaskRequest(id=task.id))
    return task


async def _tail(api: Proc, user: str, task: Task, then: Proc | None = None
                ) -> tuple[list[str], str, TaskState]:
    """``tasks/resubscribe`` on ``api``: the chunks, the last chunk's text and the final state
    (``then`` is killed once the first chunk has come)."""
    chunks, final, state = [], "", TaskState.TASK_STATE_UNSPECIFIED
    async for client in _client(api, user, streaming=True):
        async with asyncio.timeout(WAIT_S):
            async for e in client.subscribe(SubscribeToTaskRequest(id=task.id)):
                if e.HasField("artifact_update"):
                    text = get_artifact_text(e.artifact_update.artifact)
                    if e.artifact_update.last_chunk:
                        final = text
                    else:
                        chunks.append(text)
                        if then is not None:
                            then.kill()
                if e.HasField("status_update"):
                    state = e.status_update.status.state
    return chunks, final, state


async def test_resubscribe_on_a_replica_that_does_not_run_the_task(
        deployment: tuple[Cluster, Proc]) -> None:
    """``tasks/resubscribe`` on control plane B of a task A runs streams it from the turn's
    log and partial text to its end; and again for a task whose A is killed (SIGKILL) while
    B streams it: B's stream still ends, and the task is settled in the store."""
    c, a = deployment
    b = c.api(AGENTIA_MAX_SESSIONS_PER_USER="2")
    for killed in (False, True):
        task = await _working(a, "gus")
        chunks, final, state = await _tail(b, "gus", task, a if killed else None)
        [reply] = [e["text"] for e in await _events(b, "gus", f"a2a:{task.context_id}")
                   if e["type"] == "reply"]
        assert state == TaskState.TASK_STATE_COMPLETED, (killed, state)
        assert final == reply and reply.startswith("".join(chunks)) and chunks, (killed, chunks)
        async for client in _client(b, "gus", streaming=True):
            async with asyncio.timeout(WAIT_S):  # A saves it (alive) or B settled it (killed)
                while task.status.state == TaskState.TASK_STATE_WORKING:
                    task = await client.get_task(GetTaskRequest(id=task.id))
                    await asyncio.sleep(0.1)
            assert task.status.state == TaskState.TASK_STATE_COMPLETED
            assert get_artifact_text(task.artifacts[0]) == reply
            with pytest.raises(Exception, match=r"(?i)terminal state"):  # as the SDK answers
                _ = [e async for e in client.subscribe(SubscribeToTaskRequest(id=task.id))]
    assert "Traceback" not in log_of(b)
