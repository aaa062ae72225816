"""OpenTelemetry traces of a turn (docs/operations.md#tracing) from real processes: an edge
and a worker export OTLP/HTTP to a receiver in this test, which decodes the protobuf requests.
One turn with a tool call is one trace: edge receive → worker turn (claim, model, tool, model,
reply) → edge deliver, parented as documented. Off (no OTEL_*, or OTEL_SDK_DISABLED): nothing
is exported and no stream entry carries a ``tp``."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from sessions.bus import Bus
from tests.conftest import Client, Cluster

FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}  # ms: spans leave the processes at once


class Receiver:
    """An OTLP/HTTP trace receiver: every span it is sent, flattened, with its service."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests = 0
        spans, me = self.spans, self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                req = ExportTraceServiceRequest.FromString(body)
                me.requests += 1
                spans.extend(flatten(req) if self.path == "/v1/traces" else [])
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def named(self, name: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["name"] == name]


def flatten(req: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    out = []
    for rs in req.resource_spans:
        res = {a.key: a.value.string_value for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                attrs = {a.key: getattr(a.value, a.value.WhichOneof("value"))
                         for a in s.attributes}
                out.append({"name": s.name, "trace": s.trace_id.hex(), "id": s.span_id.hex(),
                            "parent": s.parent_span_id.hex(), "service": res["service.name"],
                            "attrs": attrs, "error": s.status.code == 2})
    return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def untraced(cluster: Cluster) -> Cluster:
    """The cluster without any OTEL_* variable of the environment running the tests."""
    for k in [k for k in cluster.env if k.startswith("OTEL_")]:
        del cluster.env[k]
    return cluster


Entries = dict[str, list[dict[bytes, bytes]]]


async def entries(bus: Bus) -> Entries:
    """Every entry of every stream under the test's prefix, by the key's last part (``turns``:
    the session's pending turns, ``in``: the inbound shards, ``log``...)."""
    r = bus.redis
    found: Entries = {}
    async for key in r.scan_iter(match=f"{bus.keys.prefix}:*", count=1000):
        if await r.type(key) == b"stream":
            kind = key.decode().rsplit(":", 1)[1]
            found.setdefault(kind, []).extend(f for _, f in await r.xrange(key))
    return found


async def send_then_run(cluster: Cluster, bus: Bus, env: dict[str, str]
                        ) -> tuple[Entries, dict[str, Any]]:
    """A turn that calls a tool: sent while no worker runs (its entries are read then), run
    by a worker started after. Returns the entries and the reply."""
    edge = cluster.edge(**env)
    c = await Client.open(edge.port, session="traced")
    await c.recv()
    await c.send(type="send", id="t1", text="what is 6 * 7")
    ack = await c.until("ack")
    assert ack["offset"] == 1
    found = await entries(bus)
    cluster.worker(**env)
    reply = await c.until("reply", timeout=60, turn=1)
    await c.close()
    return found, reply


async def test_one_turn_is_one_trace_across_edge_redis_and_worker(
        cluster: Cluster, bus: Bus, receiver: Receiver) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, **FAST_EXPORT}
    found, reply = await send_then_run(cluster, bus, env)
    assert "42" in reply["text"]
    turn_entries = [orjson.loads(f[b"b"]) for f in found["turns"]]
    assert len(turn_entries) == 1 and turn_entries[0]["tp"].startswith("00-")
    want = {"edge.receive": 1, "worker.turn": 1, "worker.claim": 1, "worker.model": 2,
            "worker.tool": 1, "worker.reply": 1, "edge.deliver": 3}
    deadline = time.monotonic() + 20
    while any(len(receiver.named(n)) < k for n, k in want.items()):
        assert time.monotonic() < deadline, (
            f"spans missing: {[(s['name'], s['attrs']) for s in receiver.spans]}")
        await asyncio.sleep(0.1)
    assert {n: len(receiver.named(n)) for n in want} == want
    (recv,), (turn,) = receiver.named("edge.receive"), receiver.named("worker.turn")
    assert {s["trace"] for s in receiver.spans} == {recv["trace"]}
    assert turn_entries[0]["tp"].split("-")[1:3] == [recv["trace"], recv["id"]]
    assert recv["parent"] == "" and turn["parent"] == recv["id"]
    assert recv["attrs"]["agentia.turn"] == 1 and turn["attrs"]["agentia.turn"] == 1
    for name in ("worker.claim", "worker.model", "worker.tool", "worker.reply"):
        assert {s["parent"] for s in receiver.named(name)} == {turn["id"]}, name
    assert {s["parent"] for s in receiver.named("edge.deliver")} == {recv["id"]}
    delivered = {s["attrs"]["agentia.delivery"]: s["attrs"]["agentia.event"]
                 for s in receiver.named("edge.deliver")}
    assert delivered == {"first": "turn_start", "first_chunk": "chunk", "last": "reply"}
    assert receiver.named("worker.tool")[0]["attrs"]["agentia.tool"] == "calculate"
    assert receiver.named("worker.reply")[0]["attrs"]["agentia.event"] == "reply"
    assert receiver.named("worker.claim")[0]["attrs"]["agentia.attempt"] == 1
    assert {s["service"] for s in receiver.spans if s["name"].startswith("edge.")} == {
        "agentia-edge"}
    assert {s["service"] for s in receiver.spans if s["name"].startswith("worker.")} == {
        "agentia-worker"}
    assert not any(s["error"] for s in receiver.spans)


@pytest.mark.parametrize("off", [{}, {"OTEL_SDK_DISABLED": "true"}], ids=["unset", "disabled"])
async def test_off_nothing_is_exported_and_no_entry_carries_a_traceparent(
        untraced: Cluster, bus: Bus, receiver: Receiver, off: dict[str, str]) -> None:
    # disabled: an endpoint is set too, and OTEL_SDK_DISABLED wins
    env = {**off, **FAST_EXPORT} | (
        {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url} if off else {})
    found, reply = await send_then_run(untraced, bus, env)
    assert "42" in reply["text"]
    assert {"turns", "in", "log"} <= set(found)
    assert not [f for fs in found.values() for f in fs if b"tp" in f]
    bodies = [orjson.loads(f[b"b"]) for f in found["turns"]]
    assert len(bodies) == 1 and set(bodies[0]) == {"c", "t", "u", "s", "ts"}
    assert [set(f) for f in found["in"]] == [{b"s", b"o"}]
    await asyncio.sleep(1.0)  # ten export periods, had anything been exported
    assert receiver.requests == 0
