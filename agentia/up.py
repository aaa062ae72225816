"""``agentia up``: the whole system on one machine, on an embedded default.

Starts a private redis-server (unless ``AGENTIA_REDIS_URL`` is set), one edge process and the
agent workers as children, prints where to connect and a dev token, and on Ctrl-C (or SIGTERM)
stops every child it started, by PID, and waits for them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from agentia.redis_server import RedisServer
from agentia.settings import DEV_SECRET

STATE_DIR = Path(os.environ.get("AGENTIA_STATE_DIR", ".agentia"))


def _child(args: list[str], env: dict[str, str], ready: str,
           timeout: float = 60) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    proc = subprocess.Popen([sys.executable, "-m", "agentia.cli", *args], env=env,
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        text = line.decode().strip()
        if text.startswith(ready):
            return proc, dict(p.split("=", 1) for p in text.split()[1:])
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError(f"'agentia {' '.join(args)}' did not start; see its log above")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def up(port: int = 8765, workers: int = 1, edges: int = 1, api_port: int = 8780) -> None:
    env = dict(os.environ)
    redis: RedisServer | None = None
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if not env.get("AGENTIA_REDIS_URL"):
            redis = RedisServer(STATE_DIR / "redis").start()
            env["AGENTIA_REDIS_URL"] = redis.url
            print(f"redis      {redis.url} (private, data in {STATE_DIR / 'redis'})")
        metrics_dir = STATE_DIR / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir.resolve()))
        edge_ports: list[tuple[int, int]] = []
        for n in range(edges):
            edge, info = _child(["gateway", "--port", str(port if n == 0 else 0)], env,
                                "AGENTIA_EDGE_READY")
            procs.append(edge)
            edge_ports.append((edge.pid, int(info["port"])))
        for _ in range(workers):
            procs.append(_child(["worker"], env, "AGENTIA_WORKER_READY")[0])
        env["AGENTIA_WS_URLS"] = ",".join(f"ws://127.0.0.1:{p}/v1/ws" for _, p in edge_ports)
        env.setdefault("AGENTIA_DEV_TOKENS", "true")
        api, info = _child(["api", "--port", str(api_port)], env, "AGENTIA_API_READY")
        procs.append(api)
        _banner(edge_ports, int(info["port"]), procs, redis)
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.2)
        if not stopping:
            print("a child process exited; stopping everything", file=sys.stderr)
    finally:
        print("stopping...", flush=True)
        _stop(procs)
        if redis is not None:
            redis.stop()
        print("stopped.", flush=True)


def _banner(edges: list[tuple[int, int]], api_port: int, procs: list[subprocess.Popen[bytes]],
            redis: RedisServer | None) -> None:
    from gateway.auth import mint

    token = mint(os.environ.get("AGENTIA_JWT_SECRET", DEV_SECRET), "dev", 24 * 3600)
    url = f"ws://127.0.0.1:{edges[0][1]}/v1/ws"
    api = f"http://127.0.0.1:{api_port}"
    pids = [p.pid for p in procs] + ([redis.proc.pid] if redis and redis.proc else [])
    print(f"web page   {api}/   (API docs at {api}/docs, metrics at {api}/metrics)")
    print(f"websocket  {url}")
    print(f"dev token  {token}")
    print(f"try it     agentia chat --url {url}")
    print("Ctrl-C stops everything.")
    print(f"AGENTIA_UP_READY url={url} api={api} pids={','.join(map(str, pids))} "
          f"edges={','.join(f'{pid}:{p}' for pid, p in edges)}", flush=True)
