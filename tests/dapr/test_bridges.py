"""Agentia beside the real ``daprd`` (docs/dapr.md): real Redis (tests/conftest.py), real edge,
worker, control plane and ``agentia dapr-publish`` processes, a real daprd in standalone mode
with ``pubsub.redis`` and ``state.redis`` on that Redis (tests/dapr/test_daprd.py).

* A turn's events reach a subscriber app through daprd as CloudEvents, although the sidecar
  was down while the turn ran (the turn was not held up; the publisher retried).
* A CloudEvent published to the inbound topic reaches a connected WebSocket client as a
  ``message`` event, once per CloudEvent id, and the agent (on Dapr memory) sees it.
* A worker with ``AGENTIA_MEMORY=dapr`` remembers across turns; the conversation's ended turns
  are in the state store (read back through daprd's state API), not in Agentia's Redis memory
  key (the journal), which holds only the last turn (tests/dapr/test_memory_dapr.py for the
  rest of Dapr memory's guarantees).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from launch.redis_server import RedisServer
from sessions import keys as K
from tests.conftest import Client, Cluster, Proc, token
from tests.dapr.test_daprd import DIRECT, PUBSUB, STORE, App, Daprd, daprd_bin, http
from tests.e2e.test_api import get

__all__ = ["daprd_bin"]  # the fixture, imported to be used here
APP_TOKEN = "dapr-app-token-0123456789"
DELIVERY_S = 30.0


@pytest.fixture
def plain(redis_server: RedisServer, prefix: str) -> Iterator[Cluster]:
    """One transport: the Dapr bridges do not depend on it."""
    c = Cluster(redis_server.url, prefix)
    c.env.update({"AGENTIA_DAPR_PUBSUB": PUBSUB, "NO_PROXY": "127.0.0.1,localhost"})
    yield c
    c.stop()
    assert c.edge_tracebacks() == []


def sidecar(binary: str, app_port: int, work: Path, redis_server: RedisServer,
            **env: str) -> Daprd:
    return Daprd(binary, f"agentia-{uuid.uuid4().hex[:6]}", app_port, work,
                 f"127.0.0.1:{redis_server.port}", env={**os.environ, **env})


def publisher(plain: Cluster, d: Daprd, **env: str) -> Proc:
    """``agentia dapr-publish`` beside sidecar ``d``, stopped with the cluster."""
    pub = Proc(["dapr-publish"], {**plain.env, "AGENTIA_DAPR_HTTP_PORT": str(d.http_port), **env},
               "AGENTIA_DAPR_PUBLISH_READY")
    plain.procs.append(pub)
    return pub


async def healthy(d: Daprd) -> Daprd:
    await asyncio.to_thread(d.start().wait_healthy)
    return d


async def turn(c: Client, text: str) -> tuple[int, str]:
    """Send ``text``; (its offset, the reply's text)."""
    mid = uuid.uuid4().hex
    await c.send(type="send", id=mid, text=text)
    ack = await c.until("ack", id=mid)
    reply = await c.until("reply", turn=ack["offset"], timeout=30)
    return int(ack["offset"]), str(reply["text"])


def no_traceback(p: Proc) -> None:
    text = Path(p.log.name).read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


async def test_a_turns_events_reach_a_subscriber_as_cloudevents(
        plain: Cluster, daprd_bin: str, redis_server: RedisServer, prefix: str,
        tmp_path: Path) -> None:
    topic, sid = f"agentia.events.{prefix}", f"dapr-out-{prefix[-6:]}"
    plain.env.update({"AGENTIA_DAPR_TOPIC_EVENTS": topic, "AGENTIA_DAPR_EVENTS": "user,reply"})
    with App(topic) as app:
        d = sidecar(daprd_bin, app.port, tmp_path, redis_server)
        try:
            edge = plain.edge()
            plain.worker()
            pub = publisher(plain, d, AGENTIA_DAPR_RETRY_S="0.5")
            # the sidecar is not running yet: the turn must not wait for it
            c = await Client.open(edge.port, user="alice", session=sid)
            await c.until("welcome")
            t0 = time.monotonic()
            offset, reply = await turn(c, "hello dapr")
            assert time.monotonic() - t0 < 10
            await c.close()
            await healthy(d)
            want = {f"{sid}:{offset}"}
            deadline = time.monotonic() + DELIVERY_S
            while time.monotonic() < deadline:
                got = {e["id"]: e for e in list(app.events)}
                if len(got) >= 2 and want <= set(got):
                    break
                await asyncio.sleep(0.1)
            got = {e["id"]: e for e in list(app.events)}
            assert want <= set(got) and len(got) == 2, (got, d.log_tail())
        finally:
            d.stop()
    user, answer = got[f"{sid}:{offset}"], next(e for k, e in got.items() if k not in want)
    assert user["type"] == "agentia.event.user" and answer["type"] == "agentia.event.reply"
    for ce in (user, answer):
        assert ce["specversion"] == "1.0" and ce["source"] == f"agentia/{prefix}"
        assert ce["subject"] == sid and ce["topic"] == topic and ce["pubsubname"] == PUBSUB
        assert ce["data"]["session"] == sid and ce["data"]["user"] == "alice"
        assert ce["id"] == f"{sid}:{ce['data']['offset']}"
    assert user["data"]["event"]["text"] == "hello dapr"
    assert answer["data"]["event"]["text"] == reply
    no_traceback(pub)


async def test_an_event_whose_appender_died_before_queueing_it_is_published(
        plain: Cluster, daprd_bin: str, redis_server: RedisServer, prefix: str,
        tmp_path: Path) -> None:
    """The worker is killed (SIGKILL, AGENTIA_TEST_FAULT) right after the log append of its
    reply, before the fan-out that would put it in the Dapr outbox: the publisher's sweeper
    finds the session's Dapr cursor behind its log and queues the reply from the log; the
    subscriber gets it as the CloudEvent the fan-out would have made."""
    topic, sid = f"agentia.events.{prefix}", f"dapr-kill-{prefix[-6:]}"
    plain.env.update({"AGENTIA_DAPR_TOPIC_EVENTS": topic, "AGENTIA_DAPR_EVENTS": "user,reply"})
    with App(topic) as app:
        d = await healthy(sidecar(daprd_bin, app.port, tmp_path, redis_server))
        try:
            edge = plain.edge()
            doomed = plain.worker(AGENTIA_TEST_FAULT="kill-before-fanout:reply")
            pub = publisher(plain, d, AGENTIA_DAPR_SWEEP_S="1")
            c = await Client.open(edge.port, user="alice", session=sid)
            await c.until("welcome")
            await c.send(type="send", id="m1", text="hello dapr")
            ack = await c.until("ack", id="m1")
            await asyncio.to_thread(doomed.proc.wait, 15)
            assert doomed.proc.returncode == -9  # killed by the fault, not stopped
            assert not [f for f in c.frames if f.get("type") == "reply"]  # never fanned out
            deadline = time.monotonic() + DELIVERY_S
            while time.monotonic() < deadline:
                if len({e["id"] for e in app.events}) >= 2:
                    break
                await asyncio.sleep(0.1)
            got = {e["type"]: e for e in list(app.events)}
            await c.close()
        finally:
            d.stop()
    assert set(got) == {"agentia.event.user", "agentia.event.reply"}, (got, d.log_tail())
    reply = got["agentia.event.reply"]
    assert reply["id"] == f"{sid}:{reply['data']['offset']}"
    assert reply["data"]["offset"] > ack["offset"] and "hello dapr" in \
        reply["data"]["event"]["text"]
    r = redis.Redis.from_url(redis_server.url)
    meta = r.hgetall(K.Keys(prefix).meta(sid))
    r.close()
    assert int(meta[b"dc"]) == int(meta[b"seq"])  # the sweeper moved the cursor past it
    no_traceback(pub)


def dapr_call(api: Proc, path: str, body: bytes | None, tok: str | None) -> tuple[int, Any]:
    """A call as the sidecar makes it (``dapr-api-token``), not as a user (Bearer)."""
    headers = {"Content-Type": "application/cloudevents+json"}
    if tok is not None:
        headers["dapr-api-token"] = tok
    req = urllib.request.Request(f"http://127.0.0.1:{api.port}{path}", data=body,
                                 method="GET" if body is None else "POST", headers=headers)
    try:
        with DIRECT.open(req, timeout=10) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def cloudevent(data: object, event_id: str | None = None) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id or uuid.uuid4().hex, "source": "crm",
            "type": "crm.note", "datacontenttype": "application/json", "data": data}


async def test_the_control_plane_answers_dapr_with_success_retry_or_drop(
        plain: Cluster) -> None:
    """The subscription and each status, called as the sidecar calls them."""
    topic_in = "agentia.in.statuses"
    plain.env.update({"AGENTIA_DAPR_TOPIC_IN": topic_in, "AGENTIA_DAPR_APP_TOKEN": APP_TOKEN})
    edge, api = plain.edge(), plain.api()
    c = await Client.open(edge.port, user="alice", session="dapr-status")
    await c.until("welcome")
    assert (await get(api, "/dapr/subscribe"))[0] == 401  # no dapr-api-token
    assert dapr_call(api, "/dapr/subscribe", None, "wrong-token-0123456789")[0] == 401
    assert dapr_call(api, "/dapr/subscribe", None, APP_TOKEN) == (
        200, [{"pubsubname": PUBSUB, "topic": topic_in, "route": "/dapr/messages"}])
    msg = {"session": "dapr-status", "text": "your parcel left", "role": "system", "by": "crm"}
    ce = cloudevent(msg)

    def post(body: bytes) -> Any:
        status, reply = dapr_call(api, "/dapr/messages", body, APP_TOKEN)
        assert status == 200
        return reply["status"]
    assert post(json.dumps(ce).encode()) == "SUCCESS"
    assert post(json.dumps(ce).encode()) == "SUCCESS"  # a redelivery: posted once only
    for bad in (b"{not json", json.dumps({"data": msg}).encode(),  # no id
                json.dumps(cloudevent({**msg, "role": "admin"})).encode(),
                json.dumps(cloudevent({**msg, "text": "  "})).encode(),
                json.dumps(cloudevent({**msg, "session": "no such/id"})).encode(),
                json.dumps(cloudevent({**msg, "session": "never-opened"})).encode()):
        assert post(bad) == "DROP", bad
    m = await c.until("message")
    assert (m["role"], m["text"], m["by"]) == ("system", "your parcel left", "crm")
    status, hist = await get(api, "/v1/sessions/dapr-status/events", token("alice"))
    assert status == 200 and [e["type"] for e in hist["events"]].count("message") == 1
    await c.close()
    no_traceback(api)


async def test_a_message_published_to_the_inbound_topic_reaches_the_client_and_the_agent(
        plain: Cluster, daprd_bin: str, redis_server: RedisServer, prefix: str,
        tmp_path: Path) -> None:
    topic_in, sid = f"agentia.in.{prefix}", f"dapr-in-{prefix[-6:]}"
    plain.env.update({"AGENTIA_DAPR_TOPIC_IN": topic_in, "AGENTIA_DAPR_APP_TOKEN": APP_TOKEN})
    edge, api = plain.edge(), plain.api()
    d = await healthy(sidecar(daprd_bin, api.port, tmp_path, redis_server,
                              APP_API_TOKEN=APP_TOKEN))
    try:
        plain.worker(AGENTIA_MEMORY="dapr", AGENTIA_DAPR_STATESTORE=STORE,
                     AGENTIA_DAPR_GRPC_PORT=str(d.grpc_port), DAPR_HTTP_PORT=str(d.http_port))
        c = await Client.open(edge.port, user="alice", session=sid)
        await c.until("welcome")
        await turn(c, "hello")
        note = f"refund {uuid.uuid4().hex[:8]} approved"
        ce = cloudevent({"session": sid, "text": note, "role": "operator", "by": "crm"})
        res = http("POST", f"{d.url}/v1.0/publish/{PUBSUB}/{topic_in}", ce,
                   content_type="application/cloudevents+json")
        assert res.status == 204, res.body
        m = await c.until("message", timeout=DELIVERY_S)
        assert (m["role"], m["text"], m["by"]) == ("operator", note, "crm")
        _, reply = await turn(c, "what did the operator say?")
        assert note in reply  # the agent, on Dapr memory, saw the posted message
        await c.close()
    finally:
        d.stop()
    no_traceback(api)


async def test_a_worker_with_dapr_memory_remembers_across_turns(
        plain: Cluster, daprd_bin: str, redis_server: RedisServer, prefix: str,
        tmp_path: Path) -> None:
    sid, code = f"dapr-mem-{prefix[-6:]}", uuid.uuid4().hex[:10]
    with App() as app:
        d = await healthy(sidecar(daprd_bin, app.port, tmp_path, redis_server))
        try:
            edge = plain.edge()
            worker = plain.worker(AGENTIA_MEMORY="dapr", AGENTIA_DAPR_STATESTORE=STORE,
                                  AGENTIA_DAPR_GRPC_PORT=str(d.grpc_port),
                                  DAPR_HTTP_PORT=str(d.http_port))
            c = await Client.open(edge.port, user="alice", session=sid)
            await c.until("welcome")
            await turn(c, f"my code is {code}")
            second, reply = await turn(c, "what did I say?")
            assert f"my code is {code}" in reply
            await c.close()
            # the first turn is in the state store (moved there when the second started), read
            # through daprd's state API; the second waits in the session's Redis journal
            got = http("GET", f"{d.url}/v1.0/state/{STORE}/{prefix}:{sid}:items")
            assert got.status == 200, got.body
            stored = json.dumps(got.json()["items"])
            assert f"my code is {code}" in stored and "what did I say?" not in stored
        finally:
            d.stop()
    r = redis.Redis.from_url(redis_server.url)
    try:
        journal: list[bytes] = r.lrange(K.Keys(prefix, 4).memory(sid), 0, -1)  # type: ignore[assignment]
        assert journal and all(e.startswith(b"%d|" % second) for e in journal), journal
    finally:
        r.close()
    no_traceback(worker)
