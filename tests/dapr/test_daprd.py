"""The real ``daprd`` (built by ops/dapr/build.sh from the Go module proxy) beside Agentia's Redis.

daprd runs in standalone (self-hosted) mode with two components the test writes under
tmp_path, ``pubsub.redis`` and ``state.redis``, both pointing at a real redis-server the test
starts. No placement or scheduler (actors and workflows off: their addresses are empty), no
mDNS (a Configuration picks the inert ``kubernetes`` name resolver: mDNS would announce on every
network interface), metrics off. A tiny HTTP app in the test answers ``/dapr/subscribe`` and
the topic's route. Checked: a CloudEvent published through ``/v1.0/publish`` arrives at the app
with its id, type, source and data, through a Redis stream of the test's Redis; state saved
through ``/v1.0/state`` reads back, lives in that Redis, and deletes.

Without the binary the test skips (CI: it fails), saying how to build it. docs/dapr.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from agentia import lifeline
from launch.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
PUBSUB = "agentia-pubsub"
STORE = "agentia-state"
TOPIC = "agentia.session-events"
ROUTE = "/dapr/events"
READY_S = 60.0
"""daprd's start on a busy 2-core machine (loading components, waiting for the app's port)."""
DELIVERY_S = 30.0
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Loopback calls never go through an http_proxy from the environment."""


class Reply:
    """Status, body and lower-cased headers of one HTTP call."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.body, self.headers = status, body, headers

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, body: object = None, content_type: str = "application/json",
         timeout: float = 10) -> Reply:
    """One HTTP call with the standard library; error statuses are replies, not exceptions."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": content_type} if data else {})
    try:
        with DIRECT.open(req, timeout=timeout) as res:
            return Reply(res.status, res.read(), {k.lower(): v for k, v in res.headers.items()})
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.read(), {k.lower(): v for k, v in e.headers.items()})


def find_daprd() -> str | None:
    explicit = os.environ.get("AGENTIA_DAPRD")
    candidates = [explicit] if explicit else [str(Path.home() / "go" / "bin" / "daprd")]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    return None


@pytest.fixture(scope="module")
def daprd_bin() -> str:
    path = find_daprd()
    if path is None:
        why = ("no daprd: ~/go/bin/daprd or $AGENTIA_DAPRD (./dev test builds it with "
               "ops/dapr/build.sh from the Go module proxy; its log: .venv/daprd-build.log)")
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return path


class App:
    """The Dapr app: tells daprd its subscription, records the events delivered to it."""

    def __init__(self, topic: str = TOPIC) -> None:
        self.topic = topic
        self.events: list[dict[str, Any]] = []
        self.arrived = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/dapr/subscribe":
                    self._reply(200, [{"pubsubname": PUBSUB, "topic": app.topic, "route": ROUTE}])
                else:  # /dapr/config and the like: nothing to configure
                    self._reply(404, {})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != ROUTE:
                    self._reply(404, {})
                    return
                app.events.append(json.loads(body))
                app.arrived.set()
                self._reply(200, {"status": "SUCCESS"})

            def _reply(self, status: int, doc: object) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # daprd's calls are checked, not logged

        return Handler

    def __enter__(self) -> App:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_resources(resources: Path, redis_addr: str) -> None:
    """The two components, both on the test's Redis."""
    resources.mkdir(parents=True, exist_ok=True)
    for name, kind in ((PUBSUB, "pubsub.redis"), (STORE, "state.redis")):
        (resources / f"{name}.yaml").write_text(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
            f"metadata:\n  name: {name}\n"
            f"spec:\n  type: {kind}\n  version: v1\n  metadata:\n"
            f"  - name: redisHost\n    value: \"{redis_addr}\"\n"
            "  - name: redisPassword\n    value: \"\"\n")


def write_config(path: Path) -> None:
    """No mDNS: the kubernetes resolver only formats names (no traffic); tracing off."""
    path.write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: agentia-test\n"
        "spec:\n  nameResolution:\n    component: kubernetes\n"
        "  tracing:\n    samplingRate: \"0\"\n")


class Daprd:
    """One daprd child, stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, binary: str, app_id: str, app_port: int, work: Path,
                 redis_addr: str, env: dict[str, str] | None = None) -> None:
        self.app_id = app_id
        self.env = env
        self.http_port, self.grpc_port = free_port(), free_port()
        self.log_path = work / "daprd.log"
        resources, config = work / "resources", work / "config.yaml"
        write_resources(resources, redis_addr)
        write_config(config)
        self.args = [
            binary, "--app-id", app_id, "--mode", "standalone",
            "--app-port", str(app_port), "--app-protocol", "http",
            "--app-channel-address", "127.0.0.1",
            "--dapr-listen-addresses", "127.0.0.1",
            "--dapr-http-port", str(self.http_port), "--dapr-grpc-port", str(self.grpc_port),
            "--dapr-internal-grpc-port", str(free_port()),
            "--dapr-internal-grpc-listen-address", "127.0.0.1",
            "--resources-path", str(resources), "--config", str(config),
            "--placement-host-address", "", "--scheduler-host-address", "",
            "--enable-metrics=false", "--log-level", "info"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> Daprd:
        with self.log_path.open("wb") as log:
            # tied: SIGTERM from the kernel if the test process dies before stop()
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=lifeline.tied(),
                                         env=self.env)
        return self

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_healthy(self, timeout: float = READY_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"daprd exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if http("GET", f"{self.url}/v1.0/healthz", timeout=2).status == 204:
                    return
            time.sleep(0.25)
        pytest.fail(f"daprd not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def redis_here(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("dapr-redis"), appendonly=False,
                         tied=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    with App() as a:
        yield a


@pytest.fixture(scope="module")
def daprd(daprd_bin: str, redis_here: RedisServer, app: App,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daprd]:
    d = Daprd(daprd_bin, f"agentia-{uuid.uuid4().hex[:6]}", app.port,
              tmp_path_factory.mktemp("daprd"), f"127.0.0.1:{redis_here.port}").start()
    try:
        d.wait_healthy()
        yield d
    finally:
        d.stop()


def test_version(daprd_bin: str) -> None:
    """The binary is the pinned release of ops/dapr/daprd/go.mod (not an `edge` build)."""
    gomod = (ROOT / "ops" / "dapr" / "daprd" / "go.mod").read_text()
    pinned = next(line.split()[1] for line in gomod.splitlines()
                  if line.split()[:1] == ["github.com/dapr/dapr"])
    out = subprocess.run([daprd_bin, "--version"], capture_output=True, text=True, timeout=30,
                         check=True).stdout.strip()
    assert out == pinned.removeprefix("v")


def test_publish_reaches_subscriber_through_redis(daprd: Daprd, app: App,
                                                  redis_here: RedisServer) -> None:
    event_id = uuid.uuid4().hex
    event = {"specversion": "1.0", "id": event_id, "source": "agentia/test",
             "type": "agentia.session.event", "datacontenttype": "application/json",
             "data": {"session": "s1", "kind": "delta", "text": uuid.uuid4().hex}}
    deadline = time.monotonic() + DELIVERY_S
    # daprd subscribes right after it is healthy: a publish before the subscription exists
    # would still land in the stream, so publish once and wait for that one event
    res = http("POST", f"{daprd.url}/v1.0/publish/{PUBSUB}/{TOPIC}", event,
               content_type="application/cloudevents+json")
    assert res.status == 204, res.body
    while time.monotonic() < deadline and not any(
            e.get("id") == event_id for e in app.events):
        app.arrived.wait(0.2)
        app.arrived.clear()
    got = [e for e in app.events if e.get("id") == event_id]
    assert got, f"no event at the app after {DELIVERY_S:.0f} s:\n{daprd.log_tail()}"
    ce = got[0]
    for field in ("specversion", "source", "type", "data"):
        assert ce[field] == event[field], (field, ce)
    assert ce["topic"] == TOPIC and ce["pubsubname"] == PUBSUB
    # the event went through the test's Redis: pubsub.redis keeps a stream named for the topic
    r = redis.Redis(port=redis_here.port)
    try:
        entries = repr(r.xrange(TOPIC))
        assert event_id in entries, entries
    finally:
        r.close()


def test_state_round_trip_in_redis(daprd: Daprd, redis_here: RedisServer) -> None:
    key, value = f"memory-{uuid.uuid4().hex[:8]}", {"turns": [uuid.uuid4().hex]}
    res = http("POST", f"{daprd.url}/v1.0/state/{STORE}", [{"key": key, "value": value}])
    assert res.status == 204, res.body
    got = http("GET", f"{daprd.url}/v1.0/state/{STORE}/{key}")
    assert got.status == 200 and got.json() == value, got.body
    etag = got.headers["etag"]
    # first-write-wins concurrency, which the Agents SDK's DaprSession relies on: a write with
    # the current ETag passes, a second one with the same (now stale) ETag is refused
    newer = {"turns": [*value["turns"], "second"]}
    for expected in (204, 409):
        res = http("POST", f"{daprd.url}/v1.0/state/{STORE}",
                   [{"key": key, "value": newer, "etag": etag,
                     "options": {"concurrency": "first-write"}}])
        assert res.status == expected, (expected, res.status, res.body)
    value = newer
    # state.redis keeps "<app-id>||<key>" as a hash in the test's Redis
    r = redis.Redis(port=redis_here.port)
    try:
        stored = r.hgetall(f"{daprd.app_id}||{key}")
        assert json.loads(stored[b"data"]) == value, stored
        res = http("DELETE", f"{daprd.url}/v1.0/state/{STORE}/{key}")
        assert res.status == 204, res.body
        assert not r.exists(f"{daprd.app_id}||{key}")
    finally:
        r.close()
    assert http("GET", f"{daprd.url}/v1.0/state/{STORE}/{key}").status == 204
