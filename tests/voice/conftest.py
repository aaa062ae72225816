"""Voice test harness: a real LiveKit server on free ports, the real voice worker process."""

from __future__ import annotations

import asyncio
import io
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentia.supervise import start
from launch.redis_server import RedisServer
from tests.conftest import READY_S, ROOT, Client, Cluster
from tests.voice.livekit_server import LiveKitServer, find_binary
from voice.caller import Caller
from voice.settings import VoiceSettings
from voice.tokens import Call, start_call


@pytest.fixture(scope="session")
def livekit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveKitServer]:
    binary = find_binary()
    if binary is None:
        pytest.skip("no LiveKit server binary: /root/go/bin/server or livekit-server on PATH "
                    "(go install github.com/livekit/livekit-server/cmd/server@v1.13.5)")
    server = LiveKitServer(binary, tmp_path_factory.mktemp("livekit")).start()
    yield server
    server.stop()


def voice_env(cluster: Cluster, lk: LiveKitServer) -> dict[str, str]:
    return {**cluster.env, "AGENTIA_LIVEKIT_URL": lk.url, "AGENTIA_LIVEKIT_API_KEY": lk.key,
            "AGENTIA_LIVEKIT_API_SECRET": lk.secret,
            # each test has its own worker: a unique name keeps dispatches from reaching
            # another test's worker on the same server
            "AGENTIA_VOICE_AGENT_NAME": f"agentia-voice-{uuid.uuid4().hex[:8]}",
            # the test machine has 2 cores shared with everything else: the worker's load is
            # its calls, not the machine's CPU (LiveKit gives no job to a worker at 1.0)
            "AGENTIA_VOICE_MAX_CALLS": "8", "AGENTIA_VOICE_DRAIN_S": "2"}


def voice_settings(env: dict[str, str]) -> VoiceSettings:
    return VoiceSettings(
        redis_url=env["AGENTIA_REDIS_URL"], redis_prefix=env["AGENTIA_REDIS_PREFIX"],
        shards=int(env["AGENTIA_SHARDS"]), livekit_url=env["AGENTIA_LIVEKIT_URL"],
        livekit_api_key=env["AGENTIA_LIVEKIT_API_KEY"],
        livekit_api_secret=env["AGENTIA_LIVEKIT_API_SECRET"],
        voice_agent_name=env["AGENTIA_VOICE_AGENT_NAME"])


class VoiceWorker:
    """``python -m voice`` as a child process, ready once registered with LiveKit."""

    def __init__(self, env: dict[str, str]) -> None:
        (ROOT / "test-output").mkdir(exist_ok=True)
        self.log_path = ROOT / "test-output" / f"voice-{uuid.uuid4().hex[:6]}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc, _ = start([sys.executable, "-m", "voice"], env, "AGENTIA_VOICE_READY",
                             READY_S, what=f"the voice worker (log {self.log_path})", cwd=ROOT,
                             stderr=self.log, supervised=False)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()

    def text(self) -> str:
        return Path(self.log_path).read_text(errors="replace")


@pytest.fixture
def cluster(redis_server: RedisServer, prefix: str) -> Iterator[Cluster]:
    """One edge transport only: the calls, not the edges, are under test here (and every
    call is CPU-heavy on a small machine)."""
    c = Cluster(redis_server.url, prefix, "websockets")
    yield c
    c.stop()
    assert c.edge_tracebacks() == []


@dataclass
class VoiceCall:
    """A chat client in a new session of ``user``, the voice worker and, once :meth:`join`
    ran, a caller in a call of that session."""

    chat: Client
    worker: VoiceWorker
    env: dict[str, str]
    sid: str
    user: str
    caller: Caller | None = None
    call: Call | None = None

    @property
    def joined(self) -> Caller:
        assert self.caller is not None, "no caller joined"
        return self.caller

    async def join(self) -> Caller:
        """Start a call of the session, join it, open the microphone, wait for the agent,
        then half a second of silence, as a caller would."""
        self.call = await start_call(voice_settings(self.env), self.sid, self.user)
        self.caller = await Caller.join(self.call.url, self.call.token)
        self.caller.open_microphone()
        await self.caller.ready(20)
        await asyncio.sleep(0.5)
        return self.caller

    async def leave(self) -> None:
        caller, self.caller = self.caller, None
        if caller is not None:
            await caller.leave()


@asynccontextmanager
async def voice_call(cluster: Cluster, livekit: LiveKitServer, user: str, *,
                     prefix: str = "call", join: bool = True,
                     **env: str) -> AsyncIterator[VoiceCall]:
    """The set-up of every call test: an edge (the cluster's first, or a new one), the voice
    worker run with :func:`voice_env` and ``env``, a chat client of a new session of ``user``
    past ``welcome`` and, with ``join``, a caller in a call of it (:meth:`VoiceCall.join`).
    Torn down in reverse: the caller leaves, the chat client closes, the worker stops."""
    edge = cluster.edges[0] if cluster.edges else cluster.edge()
    venv = {**voice_env(cluster, livekit), **env}
    worker = VoiceWorker(venv)
    sid = f"{prefix}-{uuid.uuid4().hex[:8]}"
    try:
        chat = await Client.open(edge.port, user=user, session=sid)
    except BaseException:
        worker.stop()
        raise
    c = VoiceCall(chat, worker, venv, sid, user)
    try:
        await chat.until("welcome")
        if join:
            await c.join()
        yield c
    finally:
        await c.leave()
        await chat.close()
        worker.stop()


UpProcess = tuple[subprocess.Popen[bytes], dict[str, str]]
"""``agentia up``'s process and the fields of its ``AGENTIA_UP_READY`` line."""


@contextmanager
def agentia_up(state_dir: Path, **env: str) -> Iterator[UpProcess]:
    """``agentia up --port 0 --api-port 0`` with a state dir of its own, none of this shell's
    ``AGENTIA_*`` settings (``env`` adds some) and no OpenAI key: the process and its
    ``AGENTIA_UP_READY`` fields, once ready. Leaving the block without an error stops it with
    Ctrl-C (SIGINT) and asserts it exits 0; on any error it is killed (by PID)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENTIA_")}
    clean.pop("OPENAI_API_KEY", None)
    clean |= {"AGENTIA_STATE_DIR": str(state_dir), "PYTHONUNBUFFERED": "1", **env}
    up, info = start([sys.executable, "-m", "launch.cli", "up", "--port", "0", "--api-port",
                      "0"], clean, "AGENTIA_UP_READY", READY_S, cwd=ROOT,
                     stderr=subprocess.DEVNULL, echo=io.BytesIO(), supervised=False)
    try:
        yield up, info
        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def stdout_line(proc: subprocess.Popen[bytes], prefix: bytes, within: float) -> bytes:
    """The first stdout line of ``proc`` starting with ``prefix``, read for at most ``within``
    seconds."""
    assert proc.stdout is not None
    fd, pending, deadline = proc.stdout.fileno(), b"", time.monotonic() + within
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, "the process exited"
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if line.startswith(prefix):
                    return line
    raise AssertionError(f"no {prefix!r} line within {within} s")
