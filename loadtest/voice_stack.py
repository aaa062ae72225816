"""bench_voice's stack, one tree's: Redis, a LiveKit server, and from the tree's checkout the
edge, the agent worker (offline demo model) and ONE voice worker, started on free ports with the
run's settings and stopped by PID however the run ends."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agentia import supervise
from agentia.supervise import stop_all
from launch.redis_server import RedisServer
from voice.livekit_server import LiveKitServer, find_binary

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Stack:
    """A started stack: its processes' environment, the PIDs the bench samples, its logs."""

    env: dict[str, str]
    voice_pid: int
    livekit_pid: int
    ours: list[int]
    """Every process of the benchmark (this one, LiveKit, edge, worker, voice, Redis)."""
    work: Path
    roles: dict[str, int]
    """The stack's processes by role: where the CPU goes (``cpu_s_by_process``)."""


@contextlib.contextmanager
def stack(a: argparse.Namespace, tree: Path = ROOT) -> Iterator[Stack]:
    """The stack of ``tree`` with ``a``'s settings, stopped (by PID) when the block ends."""
    binary = find_binary()
    if binary is None:
        raise SystemExit("no LiveKit server binary (go install "
                         "github.com/livekit/livekit-server/cmd/server@v1.13.5)")
    work = Path(tempfile.mkdtemp(prefix="agentia-bench-voice-"))
    procs: list[subprocess.Popen[bytes]] = []
    redis = RedisServer(work / "redis", appendonly=True).start()
    lk = None
    try:
        lk = LiveKitServer(binary, work / "livekit", a.livekit_target_load).start()
        env = _env(a, redis.url, lk)
        edge = spawn(["gateway", "--port", "0"], env, "AGENTIA_EDGE_READY",
                     work / "edge.log", tree)[0]
        procs.append(edge)
        worker = spawn(["worker"], env, "AGENTIA_WORKER_READY", work / "worker.log", tree)[0]
        procs.append(worker)
        voice, _ = spawn(["voice"], env, "AGENTIA_VOICE_READY", work / "voice.log", tree)
        procs.append(voice)
        assert lk.proc is not None and redis.proc is not None
        redis_pid = redis.proc.pid
        yield Stack(env, voice.pid, lk.proc.pid,
                    [os.getpid(), lk.proc.pid, *(p.pid for p in procs), redis_pid], work,
                    {"voice_worker": voice.pid, "livekit_server": lk.proc.pid,
                     "agent_worker": worker.pid, "edge": edge.pid, "redis": redis_pid})
    finally:
        stop_all(list(reversed(procs)), grace_s=10)
        if lk is not None:
            lk.stop()
        redis.stop()


def _env(a: argparse.Namespace, redis_url: str, lk: LiveKitServer) -> dict[str, str]:
    """The stack's processes' environment: this one's, the run's settings, no real model."""
    env = {**os.environ, "AGENTIA_DEV": "true",  # local: the public dev secret
           "AGENTIA_REDIS_URL": redis_url, "AGENTIA_LOG_LEVEL": "info",
           "PYTHONUNBUFFERED": "1",
           "AGENTIA_LIVEKIT_URL": lk.url, "AGENTIA_LIVEKIT_API_KEY": lk.key,
           "AGENTIA_LIVEKIT_API_SECRET": lk.secret,
           "AGENTIA_VOICE_AGENT_NAME": f"agentia-voice-bench-{uuid.uuid4().hex[:6]}",
           "AGENTIA_VOICE_LOAD_THRESHOLD": str(a.load_threshold),
           "AGENTIA_VOICE_MAX_CALLS": str(a.max_calls),
           "AGENTIA_VOICE_IDLE_PROCESSES": str(a.idle_processes),
           "AGENTIA_VOICE_DRAIN_S": "2", "AGENTIA_DEMO_WORD_DELAY": str(a.demo_word_delay),
           "AGENTIA_VOICE_STT": a.stt, **overrides(a)}
    env.pop("OPENAI_API_KEY", None)
    env.pop("AGENTIA_MODEL_BASE_URL", None)
    return env


def overrides(a: argparse.Namespace) -> dict[str, str]:
    """The voice worker's settings this run gives it (the rest are the tree's defaults)."""
    env = dict(kv.split("=", 1) for kv in a.set)
    if a.executor:
        env["AGENTIA_VOICE_EXECUTOR"] = a.executor
    return env


def spawn(args: list[str], env: dict[str, str], ready: str, log: Path,
          tree: Path = ROOT) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """``agentia <args>`` with the code of ``tree`` (its directory first on the path)."""
    return supervise.spawn(args, {**env, "PYTHONPATH": str(tree)}, ready, 180, cwd=tree,
                           stderr=log)


def commit(tree: Path = ROOT) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    model = next((ln.split(":", 1)[1].strip() for ln in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return (f"{os.cpu_count()} vCPU ({model}), {mem} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}")

