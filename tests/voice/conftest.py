"""Voice test harness: a real LiveKit server on free ports, the real voice worker process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from launch.redis_server import RedisServer
from tests.conftest import ROOT, Cluster
from tests.voice.livekit_server import LiveKitServer, find_binary
from voice.settings import VoiceSettings


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
        self.proc = subprocess.Popen([sys.executable, "-m", "voice"], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(b"AGENTIA_VOICE_READY"):
                return
        raise RuntimeError(f"the voice worker exited before it was ready; see {self.log_path}")

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
