"""The control plane against real processes: probes, metrics, history, dev tokens."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from sessions.bus import Bus
from tests.conftest import Client, Cluster, Proc, token


def _get(url: str, tok: str | None = None, method: str = "GET",
         body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode()
                                 if body is not None else None)
    if tok:
        req.add_header("Authorization", f"Bearer {tok}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def get(api: Proc, path: str, tok: str | None = None, method: str = "GET",
              body: dict[str, Any] | None = None) -> tuple[int, Any]:
    status, raw = await asyncio.to_thread(_get, f"http://127.0.0.1:{api.port}{path}", tok,
                                          method, body)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


async def test_probes_follow_the_system(cluster: Cluster) -> None:
    api = cluster.api()
    assert await get(api, "/healthz") == (200, {"status": "ok"})
    status, state = await get(api, "/readyz")
    assert status == 503 and state["redis"] is True and state["workers"] == 0
    cluster.worker()
    edge = cluster.edge()
    status, state = await get(api, "/readyz")
    assert status == 200 and state["groups"] is True and state["workers"] == 1
    assert state["edges"] == 1
    status, text = await asyncio.to_thread(_get, f"http://127.0.0.1:{edge.internal_port}/readyz")
    assert (status, text) == (200, b"ready\n")


async def test_history_is_for_the_owner_only(cluster: Cluster) -> None:
    edge, api = cluster.edge(), cluster.api()
    cluster.worker()
    c = await Client.open(edge.port, user="olga", session="hist")
    await c.recv()
    await c.send(type="send", id="1", text="remember this")
    await c.until("reply")
    status, body = await get(api, "/v1/sessions/hist/events?after=0", token("olga"))
    assert status == 200 and body["recovered"] is True
    assert [e["offset"] for e in body["events"]] == list(range(1, body["offset"] + 1))
    assert body["events"][0] == {**body["events"][0], "type": "user", "text": "remember this"}
    status, body = await get(api, "/v1/sessions/hist/events?after=2&limit=1", token("olga"))
    assert [e["offset"] for e in body["events"]] == [3]
    assert (await get(api, "/v1/sessions/hist/events", token("mallory")))[0] == 403
    assert (await get(api, "/v1/sessions/hist/events"))[0] == 401
    assert (await get(api, "/v1/sessions/nope/events", token("olga")))[0] == 404
    # edges write users' session lists in batches, every 0.5 s
    for _ in range(30):
        status, body = await get(api, "/v1/sessions", token("olga"))
        if body.get("sessions"):
            break
        await asyncio.sleep(0.1)
    assert status == 200 and [s["id"] for s in body["sessions"]] == ["hist"]


async def test_dev_tokens_only_when_enabled(cluster: Cluster) -> None:
    off = cluster.api()
    assert (await get(off, "/v1/dev/token", method="POST", body={"user": "x"}))[0] == 404
    on = cluster.api(AGENTIA_DEV_TOKENS="true")
    status, body = await get(on, "/v1/dev/token", method="POST", body={"user": "pat"})
    assert status == 200 and body["user"] == "pat"
    edge = cluster.edge()
    c = await Client.open(edge.port, tok=body["token"])
    assert (await c.recv())["type"] == "welcome"
    assert (await get(on, "/v1/dev/token", method="POST", body={"user": "a b"}))[0] == 422
    assert (await get(on, "/v1/config"))[1]["dev_tokens"] is True


async def test_metrics_aggregate_edges_and_workers(cluster: Cluster, bus: Bus) -> None:
    e1, e2, api = cluster.edge(), cluster.edge(), cluster.api()
    cluster.worker()
    a = await Client.open(e1.port, session="m1")
    b = await Client.open(e2.port, session="m2")
    await a.recv()
    await b.recv()
    await a.send(type="send", id="1", text="count me")
    await a.until("reply")
    await asyncio.sleep(1.5)  # edges publish their counters once a second
    status, text = await get(api, "/metrics")
    assert status == 200
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in text.splitlines() if line and not line.startswith("#")}
    assert samples["agentia_connections"] == 2.0
    assert samples['agentia_handshakes_total{result="ok"}'] == 2.0
    assert samples['agentia_turns_total{outcome="accepted"}'] == 1.0
    assert samples['agentia_turns_total{outcome="completed"}'] == 1.0
    assert samples["agentia_turn_duration_seconds_count"] == 1.0
    assert samples["agentia_time_to_first_delta_seconds_count"] == 1.0
    assert samples['agentia_frames_total{direction="out"}'] >= 5
