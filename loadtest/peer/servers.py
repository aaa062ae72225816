"""The servers compared, started the same way each time, and how events are fed into them.

* ``agentia-picows`` / ``agentia-websockets``: one edge process (``agentia gateway``) on a
  private Redis (no persistence: nothing here is about durability). Events go into the edge's
  delivery stream exactly as ``Bus._fan_out`` writes them (``s``, ``o``, ``e``), with offsets
  contiguous per session, so the edge's whole delivery path runs (XREAD, cursor, outbox,
  transport) and no worker is needed.
* ``centrifugo``: one process, memory engine, HMAC token secret, ``client.insecure`` off,
  namespace ``bench`` open to authenticated clients, ``GOMAXPROCS=1`` unless told otherwise.
  Events go through its HTTP API (``/api/broadcast``, one channel per connection).
  ``centrifugo-history`` is the same with channel history and recovery on (``history_size``
  100, ``history_ttl`` 300 s, ``force_recovery``), the closest match to Agentia's session log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from agentia.supervise import spawn, stop_all
from launch.redis_server import RedisServer, free_port
from loadtest.peer.adapters import channel_of, session_of
from sessions import events as E
from sessions import keys as K
from sessions.bus import Bus, connect

CENTRIFUGO_MODULE = "github.com/centrifugal/centrifugo/v6@v6.9.1"
KINDS = ("agentia-picows", "agentia-websockets", "centrifugo", "centrifugo-history")
EVENT_TEXT = "x" * 64


def event_json(seq: int) -> dict[str, Any]:
    """The same event body for every server (a reply delta of ~100 bytes)."""
    return {"type": "delta", "turn": 1, "seq": seq, "text": EVENT_TEXT}


@dataclass
class Running:
    """A started server: the PIDs whose CPU and RSS count as 'the server'."""

    kind: str
    port: int
    pid: int
    secret: str
    aux: dict[str, int] = field(default_factory=dict)
    """Other processes the server needs (Agentia: redis-server), measured separately."""
    extra: dict[str, Any] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tmp: tempfile.TemporaryDirectory[str] | None = None
    redis: RedisServer | None = None

    def stop(self) -> None:
        stop_all(self.procs, grace_s=15)
        if self.redis is not None:
            self.redis.stop()
        if self.tmp is not None:
            self.tmp.cleanup()


# ------------------------------------------------------------------ Centrifugo


def find_centrifugo(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("centrifugo")
    if found:
        return found
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True,
                                timeout=30, check=True).stdout.strip()
        path = Path(gopath) / "bin" / "centrifugo"
        if os.access(path, os.X_OK):
            return str(path)
    return None


def build_centrifugo() -> tuple[str | None, str]:
    """``go install`` it (several minutes the first time); (binary or None, why not)."""
    if shutil.which("go") is None:
        return None, "no 'go' on PATH to build it"
    proc = subprocess.run(["go", "install", CENTRIFUGO_MODULE], capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        return None, f"go install {CENTRIFUGO_MODULE} failed: {proc.stderr.strip()[-2000:]}"
    return find_centrifugo(), ""


def centrifugo_config(port: int, secret: str, api_key: str, ping_s: float,
                      history: bool) -> dict[str, Any]:
    namespace: dict[str, Any] = {"name": "bench", "allow_subscribe_for_client": True}
    if history:
        namespace.update(history_size=100, history_ttl="300s", force_recovery=True)
    return {
        "http_server": {"address": "127.0.0.1", "port": port},
        "log": {"level": "warn"},
        "usage_stats": {"disabled": True},
        "engine": {"type": "memory"},
        "client": {"token": {"hmac_secret_key": secret}, "insecure": False,
                   "ping_interval": f"{int(ping_s * 1000)}ms",
                   "pong_timeout": f"{int(ping_s * 500)}ms"},
        "http_api": {"key": api_key},
        "channel": {"namespaces": [namespace]},
        # only exposes what Centrifugo counts anyway; read for the Go heap and goroutines
        "prometheus": {"enabled": True},
        # pprof, only to force garbage collections after the hold (see force_gc)
        "debug": {"enabled": True},
    }


def start_centrifugo(binary: str, history: bool, ping_s: float, gomaxprocs: int) -> Running:
    tmp = tempfile.TemporaryDirectory(prefix="peer-centrifugo-")
    port, secret, api_key = free_port(), secrets.token_hex(16), secrets.token_hex(16)
    cfg = Path(tmp.name) / "config.json"
    cfg.write_text(json.dumps(centrifugo_config(port, secret, api_key, ping_s, history)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CENTRIFUGO_")}
    if gomaxprocs > 0:
        env["GOMAXPROCS"] = str(gomaxprocs)
    log = open(Path(tmp.name) / "centrifugo.log", "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen([binary, "-c", str(cfg)], env=env, stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=tmp.name)
    log.close()
    run = Running("centrifugo-history" if history else "centrifugo", port, proc.pid, secret,
                  extra={"api_key": api_key, "config": str(cfg),
                         "gomaxprocs": gomaxprocs or os.cpu_count()},
                  procs=[proc], tmp=tmp)
    _wait_port(port, proc, Path(tmp.name) / "centrifugo.log", run)
    return run


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, run: Running) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace")[-2000:]
            run.stop()
            raise RuntimeError(f"centrifugo exited ({proc.returncode}): {text}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    run.stop()
    raise TimeoutError("centrifugo did not listen in time")


GO_STATS = ("go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes",
            "go_memstats_heap_alloc_bytes", "go_memstats_sys_bytes", "go_gc_duration_seconds_count")


def go_stats(run: Running) -> dict[str, float]:
    """The Go runtime's own view (Prometheus endpoint): goroutines, heap, stacks, GC count."""
    url = f"http://127.0.0.1:{run.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in GO_STATS:
            out[name] = float(value)
    return out


def force_gc(run: Running, times: int = 3) -> None:
    """Run Go's collector (pprof's heap profile with gc=1 calls runtime.GC first) and give
    the scavenger a moment: idle goroutine stacks shrink only during collections, which an
    idle server rarely runs, so this gives the lower bound of its memory per connection."""
    for _ in range(times):
        url = f"http://127.0.0.1:{run.port}/debug/pprof/heap?gc=1"
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read()
        time.sleep(1.0)


async def feed_centrifugo(run: Running, conns: int, rate: float, seconds: float,
                          batch: int, lanes: int = 4) -> int:
    """Publish ``rate`` events a second for ``seconds``, each into the channel of the next
    connection, ``batch`` channels per ``broadcast`` call; returns how many. ``lanes``
    publishers run at once (each over its own connections), so that the server is not left
    idle while one call's reply travels back: one at a time could not offer 20,000/s."""
    url = f"http://127.0.0.1:{run.port}/api/broadcast"
    headers = {"X-API-Key": run.extra["api_key"]}

    async def lane(http: aiohttp.ClientSession, mine: list[int], share: float) -> int:
        sent, nxt, start = 0, 0, time.monotonic()
        while time.monotonic() - start < seconds:
            chans = [channel_of(mine[(nxt + i) % len(mine)]) for i in range(batch)]
            nxt = (nxt + batch) % len(mine)
            body = {"channels": chans, "data": event_json(sent)}
            async with http.post(url, json=body, headers=headers) as resp:
                reply = await resp.json()
                if resp.status != 200 or "error" in reply:
                    raise RuntimeError(f"broadcast failed: {resp.status} {str(reply)[:300]}")
            sent += batch
            await _pace(start, sent, share)
        return sent

    async with aiohttp.ClientSession() as http:
        done = await asyncio.gather(*(lane(http, list(range(w, conns, lanes)), rate / lanes)
                                      for w in range(lanes)))
    return sum(done)


async def _pace(start: float, sent: int, rate: float) -> None:
    ahead = start + sent / rate - time.monotonic()
    if ahead > 0:
        await asyncio.sleep(ahead)


# ------------------------------------------------------------------ Agentia


def start_agentia(transport: str, heartbeat_s: float, connections: int) -> Running:
    tmp = tempfile.TemporaryDirectory(prefix="peer-agentia-")
    redis = RedisServer(Path(tmp.name), appendonly=False).start()
    secret = secrets.token_hex(16)
    env = {**os.environ, "AGENTIA_REDIS_URL": redis.url, "AGENTIA_LOG_LEVEL": "warning",
           "AGENTIA_JWT_SECRET": secret, "AGENTIA_TRANSPORT": transport,
           "AGENTIA_HEARTBEAT_S": str(heartbeat_s),
           "AGENTIA_MAX_CONNECTIONS": str(max(connections + 100, 1000))}
    try:
        edge, info = spawn(["gateway", "--port", "0"], env, "AGENTIA_EDGE_READY")
    except Exception:
        redis.stop()
        tmp.cleanup()
        raise
    assert redis.proc is not None
    return Running(f"agentia-{transport}", int(info["port"]), edge.pid, secret,
                   aux={"redis": redis.proc.pid},
                   extra={"node": info["node"], "redis_url": redis.url}, procs=[edge],
                   tmp=tmp, redis=redis)


async def feed_agentia_append(run: Running, conns: int, rate: float, seconds: float,
                              batch: int, lanes: int = 32) -> int:
    """The worker's real path instead: ``Bus.append`` (the session log's Lua script, then the
    fan-out to the delivery stream) for each event, ``lanes`` appends in flight, each lane
    over its own sessions so that a session's events stay in order. ``batch`` is unused."""
    bus = Bus(connect(run.extra["redis_url"]), prefix="agentia", shards=8)

    async def lane(mine: list[int], share: float) -> int:
        sent, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            await bus.append(session_of(mine[sent % len(mine)]), event_json(sent))
            sent += 1
            await _pace(start, sent, share)
        return sent

    try:
        done = await asyncio.gather(*(lane(list(range(w, conns, lanes)), rate / lanes)
                                      for w in range(lanes)))
    finally:
        await bus.close()
    return sum(done)


CHUNK_RUN = "1:1:bench"
"""The run of every session's turn in the chunk feed (``<turn>:<attempt>:<nonce>``)."""


async def start_turns(run: Running, conns: int, lanes: int = 32) -> None:
    """Before a chunk feed: start turn 1 of every connection's session as a worker does
    (``Bus.append`` of its ``turn_start`` with ``run``: the partial buffer starts), so that
    each chunk then finds its run. Not measured: the caller waits for the ``turn_start``
    frames to arrive before the fan-out starts."""
    bus = Bus(connect(run.extra["redis_url"]), prefix="agentia", shards=8)

    async def lane(mine: list[int]) -> None:
        for idx in mine:
            await bus.append(session_of(idx), E.turn_start(1, 1), run=CHUNK_RUN)

    try:
        await asyncio.gather(*(lane(list(range(w, conns, lanes))) for w in range(lanes)))
    finally:
        await bus.close()


async def feed_agentia_chunk(run: Running, conns: int, rate: float, seconds: float,
                             batch: int, lanes: int = 32, run_of: int = 25) -> int:
    """The worker's path for one piece of reply text: ``Bus.stream_chunk`` (RPUSHX to the
    run's partial buffer, XADD to each holding node's delivery stream; HKEYS of the
    session's nodes first when the last view is older than ``NODES_FRESH_S``) of a
    ``chunk`` frame carrying the event's text, ``seq`` 1, 2, ... per session, ``lanes`` in
    flight, each lane over its own sessions so that a session's chunks stay in order.
    ``run_of`` chunks go to a session in a row, as a reply streams (25: one second of a
    reply coalesced every 40 ms, so the nodes are re-read once per 25 chunks, as a worker
    does). Needs :func:`start_turns` first. ``batch`` is unused."""
    bus = Bus(connect(run.extra["redis_url"]), prefix="agentia", shards=8)
    seqs = [0] * conns

    async def lane(mine: list[int], share: float) -> int:
        sent, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            idx = mine[(sent // run_of) % len(mine)]
            seqs[idx] += 1
            event = orjson.dumps(E.chunk(1, 1, seqs[idx], EVENT_TEXT))
            await bus.stream_chunk(session_of(idx), CHUNK_RUN, seqs[idx], event, EVENT_TEXT)
            sent += 1
            await _pace(start, sent, share)
        return sent

    try:
        done = await asyncio.gather(*(lane(list(range(w, conns, lanes)), rate / lanes)
                                      for w in range(lanes)))
    finally:
        await bus.close()
    return sum(done)


async def feed_agentia(run: Running, conns: int, rate: float, seconds: float,
                       batch: int) -> int:
    """Write ``rate`` events a second for ``seconds`` into the edge's delivery stream, each
    for the session of the next connection (round robin), ``batch`` per pipeline."""
    r = aioredis.from_url(run.extra["redis_url"])
    stream = K.Keys("agentia", 8).delivery(run.extra["node"])
    offsets = [0] * conns
    sent, nxt = 0, 0
    try:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            event = json.dumps(event_json(sent), separators=(",", ":")).encode()
            async with r.pipeline(transaction=False) as pipe:
                for i in range(batch):
                    idx = (nxt + i) % conns
                    offsets[idx] += 1
                    pipe.xadd(stream, {"s": session_of(idx), "o": offsets[idx], "e": event},
                              maxlen=K.DELIVERY_MAXLEN, approximate=True)
                await pipe.execute()
            nxt = (nxt + batch) % conns
            sent += batch
            await _pace(start, sent, rate)
    finally:
        await r.aclose()
    return sent
