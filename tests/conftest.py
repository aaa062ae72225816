"""Test harness: a real redis-server on a free port, real processes, real sockets."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from agentia.supervise import start
from gateway.auth import mint
from launch.redis_server import RedisServer
from sessions.bus import Bus, connect
from tests import zygote

ROOT = Path(__file__).resolve().parent.parent
READY_S = 120
"""How long a child of a test may take to print its READY line (imports on a busy machine)."""
TEST_SECRET = "agentia-test-secret-0123456789-abcdefghijklmnopqr"
"""HS256 secret of the processes tests start (49 bytes: above the 32-byte minimum)."""


BACKGROUND_BUILDS = {
    "tests/dapr": ("AGENTIA_DAPRD_BUILD_RC", "daprd"),
    "tests/voice/test_sip.py": ("AGENTIA_SIP_BUILD_RC", "sip"),
}
"""Tests that need a binary ``./dev test`` builds in the background (``in_background``), with the
variable naming the file the build writes its exit status to, and the build's name (its log:
.venv/NAME-build.log). pytest runs them after every other test, and they wait for the build."""
BUILD_WAIT_S = float(os.environ.get("AGENTIA_BUILD_WAIT_S", "1500"))
"""Longest a test waits for a background build (then it fails in CI and skips elsewhere)."""
_built: dict[str, str | None] = {}


def _needs(item: pytest.Item) -> int:
    """1 + the index in BACKGROUND_BUILDS of the build ``item`` needs; 0 for none."""
    path = Path(item.path)
    return next((i + 1 for i, where in enumerate(BACKGROUND_BUILDS)
                 if path == ROOT / where or path.is_relative_to(ROOT / where)), 0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Moves the tests of BACKGROUND_BUILDS to the end, every other order as collected."""
    items.sort(key=_needs)  # stable: modules and their fixtures stay together


def wait_for_build(rc_file: Path, wait_s: float, poll_s: float = 2.0) -> int | None:
    """The build's exit status once ``rc_file`` exists, or None after ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while not rc_file.exists():
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll_s)
    return int(rc_file.read_text().strip() or "1")


def _build_problem(var: str, name: str) -> str | None:
    """None when no background build runs or it succeeded, else what went wrong."""
    rc_path = os.environ.get(var)
    if not rc_path:
        return None
    rc_file = Path(rc_path)
    log = rc_file.parent / f"{name}-build.log"
    rc = wait_for_build(rc_file, BUILD_WAIT_S)
    if rc is None:
        return (f"the background {name} build did not end within {BUILD_WAIT_S:.0f} s "
                f"(AGENTIA_BUILD_WAIT_S; its log: {log})")
    if rc != 0:
        return f"the background {name} build failed with exit status {rc} (log: {log})"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test of BACKGROUND_BUILDS waits (once per build, bounded) for its build to end."""
    i = _needs(item)
    if not i:
        return
    var, name = list(BACKGROUND_BUILDS.values())[i - 1]
    if var not in _built:
        _built[var] = _build_problem(var, name)
    why = _built[var]
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def bus(redis_server: RedisServer, prefix: str) -> AsyncIterator[Bus]:
    b = Bus(connect(redis_server.url), prefix=prefix, shards=4)
    yield b
    await b.close()


def streamed_text(frames: list[dict[str, Any]], turn: int | None = None) -> str:
    """A turn's text from its ``chunk`` and ``partial`` frames (in arrival order, other frames
    skipped), applied by docs/protocol.md's rules: a chunk is taken only as the next ``seq``
    of its run, a partial replaces what came before, a turn_start starts over."""
    text, seq = "", 0
    for f in frames:
        if turn is not None and f.get("turn") != turn:
            continue
        kind = f.get("type")
        if kind == "turn_start":
            text, seq = "", 0
        elif kind == "partial" and f["seq"] > seq:
            text, seq = f["text"], f["seq"]
        elif kind == "chunk" and f["seq"] == seq + 1:
            text, seq = text + f["text"], f["seq"]
    return text


def token(user: str, ttl: int = 3600, secret: str = TEST_SECRET) -> str:
    return mint(secret, user, ttl)


_zygote: zygote.Client | None = None
USE_ZYGOTE = os.environ.get("AGENTIA_TEST_ZYGOTE", "1") != "0"
"""``AGENTIA_TEST_ZYGOTE=0``: every Proc is a fresh ``python -m launch.cli`` (tests/zygote.py)."""


def _popen(args: list[str], env: dict[str, str], wrapper: Sequence[str], fork: bool
           ) -> Callable[..., subprocess.Popen[bytes]]:
    """Popen, or the zygote's fork when it may stand for ``python -m launch.cli ARGS``."""
    global _zygote
    if not (fork and USE_ZYGOTE) or wrapper:  # a wrapper (ip netns exec NS) must exec
        return subprocess.Popen
    if _zygote is None:
        (ROOT / "test-output").mkdir(exist_ok=True)
        log = open(ROOT / "test-output" / f"zygote-{os.getpid()}.log", "ab")  # noqa: SIM115
        _zygote = zygote.Client(str(ROOT), os.environ, log)
    if not _zygote.eligible(args, env, str(ROOT)):
        return subprocess.Popen
    return partial(zygote.Forked, zygote=_zygote)


@pytest.fixture(scope="session", autouse=True)
def _stop_zygote() -> Iterator[None]:
    yield
    if _zygote is not None:
        _zygote.stop()


class Proc:
    """A child process of ours (edge or worker), stopped by PID at teardown. Forked by the
    session's zygote (tests/zygote.py: the SDK already imported) unless ``fork=False``, a
    ``wrapper`` or an environment the zygote cannot stand for (``zygote.Client.eligible``)."""

    def __init__(self, args: list[str], env: dict[str, str], ready: str,
                 wrapper: Sequence[str] = (), fork: bool = True) -> None:
        self.log = open(  # noqa: SIM115
            ROOT / "test-output" / f"{args[0]}-{uuid.uuid4().hex[:6]}.log", "wb")
        self.proc, self.info = start(
            [*wrapper, sys.executable, "-m", "launch.cli", *args], env, ready, READY_S,
            what=f"{args} (log {self.log.name})", cwd=ROOT, stderr=self.log, supervised=False,
            popen=_popen(args, env, wrapper, fork))
        self._terminated = False

    @property
    def port(self) -> int:
        return int(self.info["port"])

    @property
    def internal_port(self) -> int:
        """An edge's /healthz, /readyz and /metrics (gateway/internal.py)."""
        return int(self.info["internal_port"])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(15)

    def terminate(self) -> None:
        """SIGTERM without waiting (once: a second SIGTERM may mean "now" to a supervisor)."""
        if self.proc.poll() is None and not self._terminated:
            self.proc.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self) -> None:
        """SIGTERM (unless :meth:`terminate` sent it), 15 s to exit, then SIGKILL."""
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


class Cluster:
    """Spawns edges and workers against one Redis with one key prefix."""

    def __init__(self, redis_url: str, prefix: str, transport: str = "websockets") -> None:
        (ROOT / "test-output").mkdir(exist_ok=True)
        self.transport = transport
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="agentia-metrics-"))
        self.env = {**os.environ, "AGENTIA_REDIS_URL": redis_url,
                    "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
                    "AGENTIA_REDIS_PREFIX": prefix, "AGENTIA_SHARDS": "4",
                    "AGENTIA_TRANSPORT": transport, "AGENTIA_JWT_SECRET": TEST_SECRET,
                    "PYTHONUNBUFFERED": "1"}
        self.env.pop("AGENTIA_DEV", None)
        self.env.pop("OPENAI_API_KEY", None)
        self.procs: list[Proc] = []
        self.edges: list[Proc] = []

    def edge(self, **env: str) -> Proc:
        p = Proc(["gateway", "--port", "0"], {**self.env, **env}, "AGENTIA_EDGE_READY")
        self.procs.append(p)
        self.edges.append(p)
        return p

    def worker(self, agent: str = "tests.agents_fixtures:fast", **env: str) -> Proc:
        p = Proc(["worker", "--agent", agent], {**self.env, **env}, "AGENTIA_WORKER_READY")
        self.procs.append(p)
        return p

    def api(self, **env: str) -> Proc:
        p = Proc(["api", "--port", "0"], {**self.env, **env}, "AGENTIA_API_READY")
        self.procs.append(p)
        return p

    def stop(self) -> None:
        # a client the test left open cannot answer the edge's 1012 close once its event loop
        # is gone (teardown): the edge waited close_timeout (2 s) for each edge before it could
        # exit. Hanging up first is what a client that vanishes does, and the edge sees the
        # EOF at once (2.02 s -> 0.02 s per edge, either transport; docs/development.md).
        hang_up({p.port for p in self.edges})
        # every process drains at once (an edge waits up to AGENTIA_DRAIN_S for clients that a
        # finished test left open, a worker up to its grace for turns): teardown takes the
        # slowest drain, not their sum
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.stop()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def edge_tracebacks(self) -> list[str]:
        """Edges must never log a traceback, whatever clients or Redis do."""
        return [p.log.name for p in self.edges if "Traceback" in Path(p.log.name).read_text()]


def hang_up(ports: set[int]) -> int:
    """Shuts down (FIN both ways) every TCP socket of this process connected to one of
    ``ports`` on this host, as a client that vanishes would; how many. Each socket is a
    duplicate of the descriptor (``/proc/self/fd``), closed after: its owner's is untouched."""
    fds = Path("/proc/self/fd")
    n = 0
    for name in os.listdir(fds) if fds.is_dir() else []:
        try:
            if not os.readlink(fds / name).startswith("socket:"):
                continue
            s = socket.socket(fileno=os.dup(int(name)))
        except OSError:  # closed meanwhile (the listing's own descriptor too)
            continue
        with s:
            if s.family not in (socket.AF_INET, socket.AF_INET6) \
                    or s.type != socket.SOCK_STREAM:
                continue
            try:
                host, port = s.getpeername()[:2]
                if port in ports and host in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
                    s.shutdown(socket.SHUT_RDWR)
                    n += 1
            except OSError:  # not connected, or already shut down
                continue
    return n


TRANSPORTS = ("websockets", "picows")


@pytest.fixture(params=TRANSPORTS)
def cluster(request: pytest.FixtureRequest, redis_server: RedisServer,
            prefix: str) -> Iterator[Cluster]:
    """Our processes against one Redis; every test using it runs once per edge transport."""
    c = Cluster(redis_server.url, prefix, request.param)
    yield c
    c.stop()
    assert c.edge_tracebacks() == []


class Client:
    """A thin test client: raw frames, with helpers to wait for a kind of frame."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, port: int, user: str = "alice", session: str | None = None,
                   tok: str | None = None) -> Client:
        url = f"ws://127.0.0.1:{port}/v1/ws" + (f"?session={session}" if session else "")
        ws = await websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {tok or token(user)}"},
            compression=None)
        return cls(ws)

    async def send(self, **frame: Any) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.frames.append(frame)
        return frame

    async def until(self, kind: str, timeout: float = 15, **match: Any) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                f = await self.recv(timeout)
                if f["type"] == kind and all(f.get(k) == v for k, v in match.items()):
                    return f

    async def close(self) -> None:
        await self.ws.close()
