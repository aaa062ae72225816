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
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from agentia import metrics
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


class _Child:
    """One supervised child: restarted with the same arguments (an edge keeps its port) when
    it dies, at most ``MAX_RESTARTS`` times a minute."""

    MAX_RESTARTS = 5

    def __init__(self, kind: str, args: list[str], env: dict[str, str], ready: str) -> None:
        self.kind, self.args, self.env, self.ready = kind, args, env, ready
        self.restarts: list[float] = []
        self.proc, self.info = _child(args, env, ready)

    def revive(self) -> bool:
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < 60] + [now]
        if len(self.restarts) > self.MAX_RESTARTS:
            return False
        metrics.process_exited(self.proc.pid, self.env.get("PROMETHEUS_MULTIPROC_DIR"))
        self.proc, self.info = _child(self.args, self.env, self.ready)
        print(f"AGENTIA_UP_RESTARTED kind={self.kind} pid={self.proc.pid} "
              f"port={self.info.get('port', '')}", flush=True)
        return True


def up(port: int = 8765, workers: int = 1, edges: int = 1, api_port: int = 8780) -> None:
    env = dict(os.environ)
    redis: RedisServer | None = None
    children: list[_Child] = []
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
        for n in range(edges):
            edge = _Child("edge", ["gateway", "--port", str(port if n == 0 else 0)], env,
                          "AGENTIA_EDGE_READY")
            edge.args[-1] = edge.info["port"]  # a restarted edge comes back on the same port
            children.append(edge)
        children += [_Child("worker", ["worker"], env, "AGENTIA_WORKER_READY")
                     for _ in range(workers)]
        env["AGENTIA_WS_URLS"] = ",".join(f"ws://127.0.0.1:{c.info['port']}/v1/ws"
                                          for c in children if c.kind == "edge")
        env.setdefault("AGENTIA_DEV_TOKENS", "true")
        children.append(_Child("api", ["api", "--port", str(api_port)], env,
                               "AGENTIA_API_READY"))
        _banner(children, redis)
        _supervise(children, lambda: stopping)
    finally:
        print("stopping...", flush=True)
        _stop([c.proc for c in children])
        if redis is not None:
            redis.stop()
        print("stopped.", flush=True)


def _supervise(children: list[_Child], stopping: Callable[[], bool]) -> None:
    while not stopping():
        for c in children:
            if c.proc.poll() is not None and not stopping():
                print(f"{c.kind} (pid {c.proc.pid}) exited with {c.proc.returncode}; "
                      "restarting it", file=sys.stderr, flush=True)
                if not c.revive():
                    print(f"{c.kind} keeps dying; stopping everything", file=sys.stderr)
                    return
        time.sleep(0.2)


def _banner(children: list[_Child], redis: RedisServer | None) -> None:
    from gateway.auth import mint

    token = mint(os.environ.get("AGENTIA_JWT_SECRET", DEV_SECRET), "dev", 24 * 3600)
    edges = [c for c in children if c.kind == "edge"]
    url = f"ws://127.0.0.1:{edges[0].info['port']}/v1/ws"
    api = f"http://127.0.0.1:{next(c for c in children if c.kind == 'api').info['port']}"
    pids = [c.proc.pid for c in children] + ([redis.proc.pid] if redis and redis.proc else [])
    print(f"web page   {api}/   (API docs at {api}/docs, metrics at {api}/metrics)")
    print(f"websocket  {url}")
    print(f"dev token  {token}")
    print(f"try it     agentia chat --url {url}")
    print("Ctrl-C stops everything.")
    edge_list = ",".join(f"{c.proc.pid}:{c.info['port']}" for c in edges)
    print(f"AGENTIA_UP_READY url={url} api={api} pids={','.join(map(str, pids))} "
          f"edges={edge_list}", flush=True)
