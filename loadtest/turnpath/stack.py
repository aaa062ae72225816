"""A fresh redis-server, edge and worker of one checkout, measured from outside (/proc, Redis
INFO), and the size of its session logs afterwards."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import redis

from agentia.supervise import start, stop_all
from launch.redis_server import RedisServer
from loadtest.proc_stats import NO_USER_LIMITS, cpu_s, idle_share, machine_ticks
from loadtest.turnpath.clients import ENDS

IO_STATS = ("total_reads_processed", "total_writes_processed", "total_net_input_bytes",
            "total_net_output_bytes", "total_connections_received")
"""Redis INFO stats counters of its event loop (reads: a client's socket found readable and
read; writes: a reply written): with the command count, how many wake-ups a turn costs; and
the connections accepted (each a handshake of reads and replies of its own)."""


class Stack:
    """redis-server, ``edges`` edges and ``workers`` workers of ``tree``; stopped by PID.
    Each edge listens on its own port (a load balancer's view of them: :attr:`ports`)."""

    def __init__(self, tree: Path, word_delay: float, sessions: int, logs: Path,
                 extra: dict[str, str] | None = None, edges: int = 1,
                 workers: int = 1) -> None:
        """``extra``: environment variables of the edge and the worker (on top of ours)."""
        self.redis = RedisServer(logs / "redis", appendonly=True).start()
        # the same redis-server with no client at all, for the same seconds: what serverCron
        # (hz 10: expiry, clients cron, RSS from /proc) costs alone (issue 13, session 17)
        self.bare = RedisServer(logs / "redis-bare", appendonly=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AGENTIA_") and k not in ("OPENAI_API_KEY", "PYTHONPATH")}
        env.update(NO_USER_LIMITS, PYTHONPATH=str(tree), PYTHONUNBUFFERED="1",
                   AGENTIA_DEV="true", AGENTIA_REDIS_URL=self.redis.url,
                   AGENTIA_LOG_LEVEL="warning", AGENTIA_TRANSPORT="picows",
                   AGENTIA_DEMO_WORD_DELAY=str(word_delay), AGENTIA_RATE_PER_S="1000",
                   AGENTIA_BURST="1000", AGENTIA_CONCURRENCY=str(max(256, sessions)),
                   AGENTIA_MAX_CONNECTIONS_PER_USER=str(sessions + 10))
        env.update(extra or {})
        module = "launch.cli" if (tree / "launch" / "cli.py").exists() else "agentia.cli"
        self.logs = {"edge": logs / "edge.log", "worker": logs / "worker.log"}
        self.procs: list[Any] = []
        self.ports: list[int] = []
        try:
            self.bare.start()
            for i in range(edges):
                edge, info = start([sys.executable, "-m", module, "gateway", "--port", "0"],
                                   env, "AGENTIA_EDGE_READY", 120, what=f"edge {i} of {tree}",
                                   cwd=tree, stderr=self.logs["edge"])
                self.procs.append(edge)
                self.ports.append(int(info["port"]))
            for i in range(workers):
                worker, _ = start([sys.executable, "-m", module, "worker"], env,
                                  "AGENTIA_WORKER_READY", 120, what=f"worker {i} of {tree}",
                                  cwd=tree, stderr=self.logs["worker"])
                self.procs.append(worker)
        except BaseException:
            self.stop()
            raise
        self.port = self.ports[0]
        assert self.redis.proc is not None
        pids = [p.pid for p in self.procs]
        self.pids = {"edge": pids[:edges], "worker": pids[edges:],
                     "redis": [self.redis.proc.pid], "loadgen": [os.getpid()]}
        """``loadgen``: this process, the clients (on the same cores as what it measures)."""
        self.r = redis.Redis.from_url(self.redis.url)
        self.r_bare = redis.Redis.from_url(self.bare.url)

    def probe(self) -> dict[str, Any]:
        """CPU-s of each process, and Redis commands by name (our INFO left out)."""
        stats = self.r.info("commandstats")
        cmds = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()
                if k != "cmdstat_info"}
        usec = {k.removeprefix("cmdstat_"): int(v["usec"]) for k, v in stats.items()
                if k != "cmdstat_info"}
        info = self.r.info("stats")
        io = {k: int(info.get(k, 0)) for k in IO_STATS}
        cpu = {k: sum(cpu_s(p) for p in ps) for k, ps in self.pids.items()}
        cpu["redis"] = redis_cpu_s(self.r)
        cpu["redis_bare"] = redis_cpu_s(self.r_bare)
        return {"cpu": cpu, "cmds": cmds, "usec": usec,
                "io": io, "t": time.perf_counter(), "machine": machine_ticks()}

    def tracebacks(self) -> dict[str, int]:
        return {k: p.read_bytes().count(b"Traceback") if p.exists() else 0
                for k, p in self.logs.items()}

    def stop(self) -> None:
        stop_all(self.procs)
        self.redis.stop()
        self.bare.stop()


def redis_cpu_s(r: redis.Redis) -> float:
    """redis-server's CPU-s so far from its INFO cpu (getrusage, microseconds): /proc's clock
    ticks are 10 ms, and a 40-session run's whole Redis CPU is a few hundred ms, so the ticks
    and the idle baseline taken from them (3 s: zero or one tick) moved a turn's figure by
    up to 2x between rounds of one tree (session 11)."""
    cpu = r.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def delta(p0: dict[str, Any], p1: dict[str, Any]) -> dict[str, Any]:
    cmds = {k: v - p0["cmds"].get(k, 0) for k, v in p1["cmds"].items()}
    return {"cpu": {k: v - p0["cpu"][k] for k, v in p1["cpu"].items()},
            "cmds": {k: v for k, v in cmds.items() if v}, "t": p1["t"] - p0["t"],
            "usec": {k: d for k, v in p1["usec"].items() if (d := v - p0["usec"].get(k, 0))},
            "io": {k: v - p0.get("io", {}).get(k, 0) for k, v in p1.get("io", {}).items()},
            "machine_idle_share": idle_share(p0["machine"], p1["machine"])}


def log_figures(r: redis.Redis, sessions: list[str], prefix: str = "agentia") -> dict[str, Any]:
    """Bytes of the sampled sessions' logs (entry ids, field names and values), by event type,
    per finished turn; against the finished replies' text. A key of another layout (a checkout
    that names the log differently) shows as no turns."""
    size: Counter[str] = Counter()
    turns = reply_chars = mem = 0
    for sid in sessions:
        key = f"{prefix}:{{{sid}}}:log"
        mem += int(r.memory_usage(key, samples=0) or 0)
        rows: list[tuple[bytes, dict[bytes, bytes]]] = r.xrange(key)  # type: ignore[assignment]
        for rid, fields in rows:
            kind = "?"
            for value in fields.values():
                if value[:1] == b"{":
                    ev = orjson.loads(value)
                    kind = str(ev.get("type", "?"))
                    turns += kind in ENDS
                    reply_chars += len(ev.get("text", "")) if kind == "reply" else 0
            size[kind] += len(rid) + sum(len(k) + len(v) for k, v in fields.items())
    total = sum(size.values())
    per = max(1, turns)
    return {"sessions": len(sessions), "finished_turns": turns,
            "bytes_per_turn": round(total / per), "reply_chars_per_turn": round(
                reply_chars / per), "memory_usage_bytes_per_turn": round(mem / per),
            "ratio_to_reply": round(total / reply_chars, 2) if reply_chars else None,
            "ratio_to_reply_without_user": round((total - size["user"]) / reply_chars, 2)
            if reply_chars else None,
            "bytes_per_turn_by_type": {k: round(v / per) for k, v in size.most_common()}}
