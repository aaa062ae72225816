"""The worker benchmark's stack and bus client (loadtest/bench_worker.py): redis-server, the
model stub when asked, one worker of a checkout; the turns submitted and their events tallied
from a node's delivery stream."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from agentia import supervise
from launch.redis_server import RedisServer
from loadtest.proc_stats import cpu_s
from sessions.bus import Bus

ROOT = Path(__file__).resolve().parent.parent
NODE = "bench-worker-node"
TEXT = (b"delta", b"chunk")  # reply text: a log event before issue 13, a frame after
ENDS = (b"reply", b"cancelled", b"turn_error")


@dataclass
class Tally:
    """Per turn (session, offset): when it was submitted, started, first text, ended."""

    submitted: dict[tuple[str, int], float] = field(default_factory=dict)
    started: dict[tuple[str, int], float] = field(default_factory=dict)
    first: dict[tuple[str, int], float] = field(default_factory=dict)
    ended: dict[tuple[str, int], tuple[float, bytes]] = field(default_factory=dict)
    waiters: dict[str, asyncio.Event] = field(default_factory=dict)
    an_end: asyncio.Event = field(default_factory=asyncio.Event)
    texts: int = 0
    tokens: int = 0
    """Model tokens of reply text seen (the stub's tokens are words with a leading space)."""

    def see(self, sid: str, event: bytes, now: float) -> None:
        ev = orjson.loads(event)
        kind = ev.get("type", "").encode()
        turn = ev.get("turn")
        if turn is None:
            return
        key = (sid, int(turn))
        if kind == b"turn_start":
            self.started.setdefault(key, now)
        elif kind in TEXT:
            self.texts += 1
            self.tokens += ev.get("text", ev.get("delta", "")).count(" ")
            self.started.setdefault(key, now)
            self.first.setdefault(key, now)
        elif kind in ENDS:
            self.ended.setdefault(key, (now, kind))
            self.an_end.set()
            if w := self.waiters.get(sid):
                w.set()

    def in_flight(self) -> int:
        return len(self.started) - sum(1 for k in self.started if k in self.ended)

    def streaming(self) -> int:
        """Turns whose reply text has begun and not ended."""
        return len(self.first) - sum(1 for k in self.first if k in self.ended)


@dataclass
class Stack:
    """redis-server, optionally the stub model, and one worker of ``tree``."""

    tree: Path
    logs: Path
    env: dict[str, str]
    redis: RedisServer | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    worker: subprocess.Popen[bytes] | None = None
    stub: subprocess.Popen[bytes] | None = None

    def start(self, stub: list[str] | None) -> Stack:
        self.redis = RedisServer(self.logs / f"redis-{uuid.uuid4().hex[:6]}").start()
        env = {**os.environ, **self.env, "AGENTIA_REDIS_URL": self.redis.url,
               "AGENTIA_LOG_LEVEL": "warning", "PYTHONPATH": str(self.tree)}
        if stub is not None:
            proc, info = supervise.start(
                [sys.executable, "-m", "loadtest.openai_stub", *stub], os.environ,
                "OPENAI_STUB_READY", 30, cwd=ROOT, what="the model stub")
            self.procs.append(proc)
            self.stub = proc
            env["AGENTIA_MODEL_BASE_URL"] = info["base_url"]
        module = "launch.cli" if (self.tree / "launch" / "cli.py").exists() else "agentia.cli"
        self.worker, _ = supervise.start(
            [sys.executable, "-m", module, "worker"], env, "AGENTIA_WORKER_READY", 120,
            cwd=self.tree, stderr=self.logs / f"worker-{self.tree.name}.log",
            what=f"the worker of {self.tree}")
        self.procs.append(self.worker)
        return self

    def stop(self) -> None:
        for p in reversed(self.procs):
            supervise.kill_group(p) if p.poll() is None else None
        if self.redis:
            self.redis.stop()

    def redis_pid(self) -> int:
        assert self.redis is not None and self.redis.proc is not None
        return self.redis.proc.pid

    def worker_cpu(self) -> float:
        assert self.worker is not None
        return cpu_s(self.worker.pid)

    def worker_peak_mib(self) -> float:
        """The worker's peak resident memory so far (VmHWM), MiB."""
        assert self.worker is not None
        status = Path(f"/proc/{self.worker.pid}/status").read_text()
        kib = next(int(line.split()[1]) for line in status.splitlines()
                   if line.startswith("VmHWM:"))
        return round(kib / 1024, 1)


async def deliveries(bus: Bus, tally: Tally, stop: asyncio.Event) -> None:
    last, beat = b"$", 0.0
    while not stop.is_set():
        if time.monotonic() - beat > 2:
            await bus.heartbeat_node(NODE)
            beat = time.monotonic()
        rows = await bus.read_delivery(NODE, last, block_ms=200)
        now = time.monotonic()
        for d in rows:  # log events and chunks (sessions.roles.Delivered)
            last = d.id
            tally.see(d.session, d.event, now)


async def open_sessions(bus: Bus, sessions: list[str]) -> None:
    await bus.heartbeat_node(NODE)
    for i in range(0, len(sessions), 200):
        batch = sessions[i:i + 200]
        await asyncio.gather(*(bus.open_session(s, f"u{n % 50}", NODE)
                               for n, s in enumerate(batch)))


async def submit(bus: Bus, tally: Tally, sid: str, n: int) -> tuple[str, int]:
    t = time.monotonic()
    sub = await bus.submit(sid, f"c{n}", f"turn {n} of {sid}", user="bench")
    tally.submitted[(sid, sub.offset)] = t
    return sid, sub.offset
