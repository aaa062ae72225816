"""``agentia up``: the whole system on one machine, on an embedded default.

Checks that every port it was given is free, starts a private redis-server (unless
``AGENTIA_REDIS_URL`` is set), one edge process, the agent workers, the voice pieces when they
can run, and the control plane as children, prints where to connect and a dev token, writes
``<state dir>/up.json`` (where ``agentia chat`` finds the running system), and on Ctrl-C (or
SIGTERM) stops every child it started, by PID, and waits for them. Children are tied to it
(:mod:`agentia.lifeline`): if it is killed, they stop too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import orjson

from agentia.ports import busy_line, problem
from agentia.settings import DEV_SECRET, SettingsError
from agentia.supervise import (
    Child,
    StartError,
    Stopped,
    Supervised,
    say,
    stop_all,
    stop_signals,
    supervise,
)
from launch.redis_server import RedisServer
from launch.up_sip import NO_SIP, SipSetting, livekit_redis, sip_setting
from voice import sip_service
from voice.livekit_server import LiveKitServer, find_binary, free_port
from voice.sip_service import SipService

DEFAULT_STATE_DIR = ".agentia"
STATE_DIR = Path(os.environ.get("AGENTIA_STATE_DIR", DEFAULT_STATE_DIR))
UP_FILE = "up.json"
"""In the state dir while ``agentia up`` runs: its URLs and PID (read by ``agentia chat``)."""


def up(port: int = 8765, workers: int = 1, edges: int = 1, api_port: int = 8780,
       livekit_port: int = 0) -> None:
    """Run until SIGINT/SIGTERM; exit 1 (one line on stderr) when something cannot start."""
    env = dict(os.environ)
    try:
        sip = sip_setting(env)  # AGENTIA_SIP, AGENTIA_SIP_PORT
    except SettingsError as exc:
        say(f"agentia up: {exc}", sys.stderr)
        raise SystemExit(1) from None
    busy = _busy_ports(env, port, api_port, livekit_port, sip.port if sip.on else 0)
    if busy:
        say(busy, sys.stderr)
        raise SystemExit(1)
    env["AGENTIA_DEV"] = "true"  # children accept the public dev secret (settings.check_secret)
    say("dev mode   AGENTIA_DEV=true: the public dev secret is accepted; never in production")
    stopping = stop_signals()
    parts = _Parts()
    try:
        parts.start(env, port, workers, edges, api_port, livekit_port, stopping, sip)
        _banner(parts)
        supervise(parts.supervised(), stopping)
    except Stopped:
        pass
    except (StartError, OSError) as exc:
        say(f"agentia up: {exc}", sys.stderr)
        raise SystemExit(1) from None
    finally:
        parts.stop()


def _busy_ports(env: dict[str, str], port: int, api_port: int,
                livekit_port: int, sip_port: int = 0) -> str | None:
    """The first port given to ``up`` that cannot be listened on, as one line to print."""
    host = env.get("AGENTIA_HOST") or "127.0.0.1"
    internal = int(env.get("AGENTIA_INTERNAL_PORT") or (port + 1000 if port else 0))
    checks = [(host, port, "edge WebSocket", "--port"),
              (env.get("AGENTIA_INTERNAL_HOST") or "127.0.0.1", internal,
               "edge /readyz and /metrics, --port + 1000", "AGENTIA_INTERNAL_PORT"),
              (host, api_port, "control plane", "--api-port"),
              ("127.0.0.1", livekit_port, "LiveKit server", "--livekit-port"),
              ("127.0.0.1", sip_port, "SIP service", "AGENTIA_SIP_PORT")]
    for where, number, what, option in checks:
        why = problem(where, number)
        if why:
            return busy_line("agentia up", what, where, number, why, option)
    return None


class _Parts:
    """What ``up`` started, in order, so that :meth:`stop` undoes exactly that."""

    def __init__(self) -> None:
        self.redis: RedisServer | None = None
        self.livekit: LiveKitServer | None = None
        self.livekit_redis: RedisServer | None = None  # with SIP: LiveKit's own (psrpc)
        self.sip: SipService | None = None
        self.children: list[Child] = []

    def start(self, env: dict[str, str], port: int, workers: int, edges: int, api_port: int,
              livekit_port: int, stopping: Callable[[], bool],
              sip: SipSetting = NO_SIP) -> None:
        if not env.get("AGENTIA_REDIS_URL"):
            self.redis = RedisServer(STATE_DIR / "redis", tied=True).start()
            env["AGENTIA_REDIS_URL"] = self.redis.url
            say(f"redis      {self.redis.url} (private, data in {STATE_DIR / 'redis'})")
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_fresh(STATE_DIR / "metrics")))
        for n in range(edges):
            edge = Child("edge", ["gateway", "--port", str(port if n == 0 else 0)], env,
                         "AGENTIA_EDGE_READY", stopping=stopping)
            edge.args[-1] = edge.info["port"]  # a restarted edge comes back on the same port
            self.children.append(edge)
        # no --agent: the demo agents, demo (the default) and triage (docs/agents.md)
        self.children += [Child("worker", ["worker"], env, "AGENTIA_WORKER_READY",
                                stopping=stopping) for _ in range(workers)]
        if workers:
            names = self.children[-1].info.get("agents", "").split(",")
            say(f"agents     {names[0]} (default)" + "".join(f", {n}" for n in names[1:]))
        env["AGENTIA_WS_URLS"] = ",".join(f"ws://127.0.0.1:{c.info['port']}/v1/ws"
                                          for c in self.children if c.kind == "edge")
        env.setdefault("AGENTIA_DEV_TOKENS", "true")
        if env.get("AGENTIA_WEBHOOK_URL"):  # docs/backend.md "Webhooks"
            self.children.append(Child("webhooks", ["webhooks"], env, "AGENTIA_WEBHOOKS_READY",
                                       stopping=stopping))
            say(f"webhooks   on: POSTing to {env['AGENTIA_WEBHOOK_URL']}")
        if env.get("AGENTIA_DAPR_TOPIC_EVENTS"):  # docs/dapr.md: a sidecar must be running
            self.children.append(Child("dapr-publish", ["dapr-publish"], env,
                                       "AGENTIA_DAPR_PUBLISH_READY", stopping=stopping))
            say(f"dapr       on: publishing to topic {env['AGENTIA_DAPR_TOPIC_EVENTS']}")
        if not api_port:
            # chosen now: LiveKit, started first, posts its webhooks to the control plane
            api_port = free_port()
        self.livekit_redis = _sip_redis(env, sip)
        lk_redis = "" if self.livekit_redis is None else f"127.0.0.1:{self.livekit_redis.port}"
        self.livekit = _voice(env, self.children, livekit_port, stopping, api_port, lk_redis)
        if self.livekit is not None and self.livekit.redis:
            self.sip = _sip(self.livekit, sip.port)
        self.children.append(Child("api", ["api", "--port", str(api_port)], env,
                                   "AGENTIA_API_READY", stopping=stopping))

    def supervised(self) -> list[Supervised]:
        """What is restarted when it dies: the LiveKit server first (a voice worker that lost
        it registers again by itself once it is back), then the children."""
        servers: list[Supervised] = [_Restarted("livekit", s) for s in (self.livekit,)
                                     if s is not None]
        servers += [_Restarted("sip", s) for s in (self.sip,) if s is not None]
        return [*servers, *self.children]

    def stop(self) -> None:
        say("stopping...")
        with contextlib.suppress(OSError):
            (STATE_DIR / UP_FILE).unlink(missing_ok=True)
        stop_all([c.proc for c in self.children])
        for server in (self.sip, self.livekit, self.livekit_redis, self.redis):
            if server is not None:
                server.stop()
        say("stopped.")


class _Server(Protocol):
    proc: subprocess.Popen[bytes] | None

    def start(self) -> Any: ...


class _Restarted:
    """A server ``up`` started its own way (its private LiveKit server, LiveKit's SIP
    service), restarted like a child when it dies: on the same ports with the same config
    (what the voice worker and the control plane were given), at most
    ``Child.MAX_RESTARTS`` times a minute."""

    def __init__(self, kind: str, server: _Server) -> None:
        self.kind, self.server = kind, server
        self.restarts: list[float] = []

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.server.proc is not None
        return self.server.proc

    def revive(self) -> bool:
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < 60] + [now]
        if len(self.restarts) > Child.MAX_RESTARTS:
            return False
        try:
            self.server.start()
        except RuntimeError as exc:  # it does not come back: up stops, saying why
            say(f"{self.kind:<10} {exc}", sys.stderr)
            return False
        port = getattr(self.server, "port", None) or getattr(self.server, "sip_port", "")
        say(f"AGENTIA_UP_RESTARTED kind={self.kind} pid={self.proc.pid} port={port}")
        return True


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path.resolve()


def _sip_redis(env: dict[str, str], sip: SipSetting) -> RedisServer | None:
    """With SIP on and a LiveKit server of ``up``'s own to come: a private Redis for it and
    its SIP service; otherwise say why SIP is off (when it was asked for)."""
    if not sip.on:
        return None
    why = ("AGENTIA_LIVEKIT_URL is set (SIP runs beside up's own LiveKit server)"
           if env.get("AGENTIA_LIVEKIT_URL") else
           "no livekit-sip; build it with ops/sip/build.sh" if sip_service.find_binary() is None
           else "no LiveKit server binary" if find_binary() is None else "")
    if why:
        say(f"sip        off: {why}")
        return None
    return livekit_redis(STATE_DIR)


def _sip(livekit: LiveKitServer, port: int) -> SipService:
    binary = sip_service.find_binary()
    assert binary is not None  # checked by _sip_redis
    sip = SipService(binary, STATE_DIR / "sip", livekit, sip_port=port, tied=True).start()
    say(f"sip        on: SIP on 127.0.0.1:{sip.sip_port} (UDP and TCP), LiveKit's SIP service; "
        "route numbers to sessions with voice/telephony.py")
    return sip


def _voice(env: dict[str, str], children: list[Child], livekit_port: int,
           stopping: Callable[[], bool], api_port: int = 0,
           redis: str = "") -> LiveKitServer | None:
    """Start a private LiveKit server and a voice worker when both can run here; say why not
    otherwise. With ``AGENTIA_LIVEKIT_URL`` set, that server is used instead. The private
    server posts its webhooks to the control plane on ``api_port`` (a killed voice worker's
    calls end there: voice/webhooks.py); ``redis``: its Redis (host:port), for SIP."""
    try:
        import livekit.agents  # noqa: F401
    except ImportError:
        say("voice      off: the voice extra is not installed (pip install 'agentia[voice]')")
        return None
    server = None
    if not env.get("AGENTIA_LIVEKIT_URL"):
        binary = find_binary()
        if binary is None:
            say("voice      off: no LiveKit server binary; build it with 'go install "
                "github.com/livekit/livekit-server/cmd/server@v1.13.5' (./dev up does)")
            return None
        host = env.get("AGENTIA_HOST") or "127.0.0.1"
        hook = (f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{api_port}"
                "/v1/voice/livekit-events" if api_port else "")
        server = LiveKitServer(binary, STATE_DIR / "livekit", port=livekit_port,
                               tied=True, webhook_url=hook, redis=redis).start()
        env |= {"AGENTIA_LIVEKIT_URL": server.url, "AGENTIA_LIVEKIT_API_KEY": server.key,
                "AGENTIA_LIVEKIT_API_SECRET": server.secret}
    env["AGENTIA_VOICE"] = "true"
    # on a developer's machine other work moves the CPU load LiveKit dispatches by: report
    # load as calls taken (voice/settings.py) so the Talk button is not refused by a busy box
    env.setdefault("AGENTIA_VOICE_MAX_CALLS", "4")
    # livekit-agents empties PROMETHEUS_MULTIPROC_DIR when its worker starts: a directory of
    # its own, or the edge's and worker's counters vanish from /metrics
    voice_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(_fresh(STATE_DIR / "voice-metrics"))}
    children.append(Child("voice", ["voice"], voice_env, "AGENTIA_VOICE_READY", timeout=120,
                          stopping=stopping))
    say(f"voice      on: LiveKit at {env['AGENTIA_LIVEKIT_URL']}, voice worker running")
    return server


def chat_command(url: str) -> str:
    """``agentia chat`` as it can be typed here: the console script beside this interpreter
    (``.venv/bin/agentia`` after ``./dev up``), which finds the running system in the state
    dir; ``--url`` only when that dir is not the default one."""
    script = Path(sys.executable).parent / "agentia"
    if script.exists():
        rel = os.path.relpath(script)
        prog = rel if not rel.startswith("..") else str(script)
    else:
        prog = f"{sys.executable} -m launch.cli"
    same_dir = Path(DEFAULT_STATE_DIR) == STATE_DIR
    return f"{prog} chat" + ("" if same_dir else f" --url {url}")


def _banner(parts: _Parts) -> None:
    from gateway.auth import mint

    children = parts.children
    token = mint(os.environ.get("AGENTIA_JWT_SECRET", DEV_SECRET), "dev", 24 * 3600)
    edges = [c for c in children if c.kind == "edge"]
    url = f"ws://127.0.0.1:{edges[0].info['port']}/v1/ws"
    api = f"http://127.0.0.1:{next(c for c in children if c.kind == 'api').info['port']}"
    # LiveKit last (tests kill it by this list's last PID), SIP before it
    pids = [c.proc.pid for c in children] + [s.proc.pid for s in (parts.redis, parts.sip,
                                                                  parts.livekit)
                                             if s is not None and s.proc is not None]
    voice = "on" if any(c.kind == "voice" for c in children) else "off"
    _write_state(url, api, voice)
    say(f"web page   {api}/   (API docs at {api}/docs, metrics at {api}/metrics)")
    say(f"websocket  {url}")
    say(f"dev token  {token}")
    say(f"try it     {chat_command(url)}")
    say("Ctrl-C stops everything.")
    edge_list = ",".join(f"{c.proc.pid}:{c.info['port']}" for c in edges)
    sip = "off" if parts.sip is None or parts.sip.proc is None \
        else f"{parts.sip.proc.pid}:{parts.sip.sip_port}"
    say(f"AGENTIA_UP_READY url={url} api={api} voice={voice} pids={','.join(map(str, pids))} "
        f"edges={edge_list} sip={sip}")


def _write_state(url: str, api: str, voice: str) -> None:
    """``up.json``, written whole then renamed, so a reader never sees half of it."""
    path = STATE_DIR / UP_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps({"url": url, "api": api, "voice": voice, "pid": os.getpid()}))
    tmp.replace(path)
