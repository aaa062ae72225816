"""``agentia up``: the whole system on one machine, on an embedded default.

Starts a private redis-server (unless ``AGENTIA_REDIS_URL`` is set), one edge process and the
agent workers as children, prints where to connect and a dev token, and on Ctrl-C (or SIGTERM)
stops every child it started, by PID, and waits for them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from agentia.redis_server import RedisServer
from agentia.settings import DEV_SECRET
from agentia.supervise import Child, stop_all, stop_signals, supervise
from voice.livekit_server import LiveKitServer, find_binary

STATE_DIR = Path(os.environ.get("AGENTIA_STATE_DIR", ".agentia"))


def up(port: int = 8765, workers: int = 1, edges: int = 1, api_port: int = 8780) -> None:
    env = dict(os.environ)
    env["AGENTIA_DEV"] = "true"  # children accept the public dev secret (settings.check_secret)
    print("dev mode   AGENTIA_DEV=true: the public dev secret is accepted; never in production")
    redis: RedisServer | None = None
    children: list[Child] = []
    livekit: LiveKitServer | None = None
    stopping = stop_signals()
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
            edge = Child("edge", ["gateway", "--port", str(port if n == 0 else 0)], env,
                          "AGENTIA_EDGE_READY")
            edge.args[-1] = edge.info["port"]  # a restarted edge comes back on the same port
            children.append(edge)
        children += [Child("worker", ["worker"], env, "AGENTIA_WORKER_READY")
                     for _ in range(workers)]
        env["AGENTIA_WS_URLS"] = ",".join(f"ws://127.0.0.1:{c.info['port']}/v1/ws"
                                          for c in children if c.kind == "edge")
        env.setdefault("AGENTIA_DEV_TOKENS", "true")
        livekit = _voice(env, children)
        children.append(Child("api", ["api", "--port", str(api_port)], env,
                               "AGENTIA_API_READY"))
        _banner(children, redis, livekit)
        supervise(children, stopping)
    finally:
        print("stopping...", flush=True)
        stop_all([c.proc for c in children])
        if livekit is not None:
            livekit.stop()
        if redis is not None:
            redis.stop()
        print("stopped.", flush=True)


def _voice(env: dict[str, str], children: list[Child]) -> LiveKitServer | None:
    """Start a private LiveKit server and a voice worker when both can run here; say why not
    otherwise. With ``AGENTIA_LIVEKIT_URL`` set, that server is used instead."""
    try:
        import livekit.agents  # noqa: F401
    except ImportError:
        print("voice      off: the voice extra is not installed (pip install 'agentia[voice]')")
        return None
    server = None
    if not env.get("AGENTIA_LIVEKIT_URL"):
        binary = find_binary()
        if binary is None:
            print("voice      off: no LiveKit server binary; build it with 'go install "
                  "github.com/livekit/livekit-server/cmd/server@v1.13.5' (./dev up does)")
            return None
        server = LiveKitServer(binary, STATE_DIR / "livekit").start()
        env |= {"AGENTIA_LIVEKIT_URL": server.url, "AGENTIA_LIVEKIT_API_KEY": server.key,
                "AGENTIA_LIVEKIT_API_SECRET": server.secret}
    env["AGENTIA_VOICE"] = "true"
    # on a developer's machine other work moves the CPU load LiveKit dispatches by: report
    # load as calls taken (voice/settings.py) so the Talk button is not refused by a busy box
    env.setdefault("AGENTIA_VOICE_MAX_CALLS", "4")
    children.append(Child("voice", ["voice"], env, "AGENTIA_VOICE_READY", timeout=120))
    print(f"voice      on: LiveKit at {env['AGENTIA_LIVEKIT_URL']}, voice worker running")
    return server


def _banner(children: list[Child], redis: RedisServer | None,
            livekit: LiveKitServer | None) -> None:
    from gateway.auth import mint

    token = mint(os.environ.get("AGENTIA_JWT_SECRET", DEV_SECRET), "dev", 24 * 3600)
    edges = [c for c in children if c.kind == "edge"]
    url = f"ws://127.0.0.1:{edges[0].info['port']}/v1/ws"
    api = f"http://127.0.0.1:{next(c for c in children if c.kind == 'api').info['port']}"
    pids = [c.proc.pid for c in children] + [s.proc.pid for s in (redis, livekit)
                                             if s is not None and s.proc is not None]
    voice = "on" if any(c.kind == "voice" for c in children) else "off"
    print(f"web page   {api}/   (API docs at {api}/docs, metrics at {api}/metrics)")
    print(f"websocket  {url}")
    print(f"dev token  {token}")
    print(f"try it     agentia chat --url {url}")
    print("Ctrl-C stops everything.")
    edge_list = ",".join(f"{c.proc.pid}:{c.info['port']}" for c in edges)
    print(f"AGENTIA_UP_READY url={url} api={api} voice={voice} pids={','.join(map(str, pids))} "
          f"edges={edge_list}", flush=True)
