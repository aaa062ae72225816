"""The turn path measured from outside (issue 13): what a turn costs Redis, the edge and the
worker, with the code of one or more checkouts side by side in one run.

For each ``--tree`` (repeatable; default this checkout), each profile (``--profiles``) and each
of ``--rounds`` rounds (trees alternated, the order reversed every other round), a fresh stack
of that checkout is started: redis-server (AOF, fsync every second, as in production), one edge
(``agentia gateway``, picows) and one worker (``agentia worker``, the demo model). ``--sessions``
client sessions (one connection, one reader each) open, the processes idle ``--idle`` seconds
(the baseline), then each session sends turns in a closed loop (the next when the last ended)
or, with ``--rate``, turns go out at that total rate, for ``--seconds``; every acked turn is then
given ``--grace`` seconds to end. Profiles:

* ``long``: a ~300-word reply (``--long-words``) streamed at ``--long-word-delay`` s per word
  (0.02: 50 tokens/s, ~150 frames of text at the worker's 40 ms coalescing);
* ``short``: the demo reply (~27 words) at the demo model's 30 ms per word.

Everything is observed from outside (frames, Redis INFO, /proc), so the bench runs unchanged
against a checkout whose reply text streams as log ``delta`` events and one that sends ``chunk``
frames (docs/protocol.md): both count as reply-text frames, ``partial`` frames are counted apart.
Per run: Redis commands (INFO commandstats, a script's inner calls included, our INFO excluded)
per turn and per reply-text frame; CPU-ms per turn of redis-server, the edge and the worker (less
what each burns idle); turns/s; ack and turn latency p50/p99; lost turns (acked, never ended by
``reply``/``cancelled``/``turn_error``); and for ``--log-sample`` sessions the session log's bytes
per finished turn (XRANGE: entry ids, field names and values) against the reply text.

    python -m loadtest.bench_turnpath --tree /work/wt/before --tree . --rounds 2 --record

Results: ``loadtest/results/turnpath.json`` (``--record NAME``); docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
import websockets

from agentia.settings import DEV_SECRET
from agentia.supervise import start, stop_all
from gateway.auth import mint
from launch.redis_server import RedisServer
from loadtest.attack.edgeproc import tree_commit
from loadtest.bench_core import NO_USER_LIMITS, cpu_s, pct
from loadtest.record import record

ROOT = Path(__file__).resolve().parent.parent
TEXT_FRAMES = ("delta", "chunk")  # reply text: a log event before issue 13, a frame after
ENDS = ("reply", "cancelled", "turn_error")
DEMO_WORDS = 25  # what the demo model wraps around the quoted text (sessions/demo.py)
VOCAB = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "calm",
         "owls", "watch", "from", "green", "hills")  # no digits, no "time": no tool call


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    text: str  # what each turn sends (the demo model's reply quotes it)
    word_delay: float


def profiles(a: argparse.Namespace) -> dict[str, Profile]:
    words = max(1, a.long_words - DEMO_WORDS)
    long_text = " ".join(VOCAB[i % len(VOCAB)] for i in range(words))
    return {"long": Profile("long", long_text, a.long_word_delay),
            "short": Profile("short", "hello there", a.short_word_delay)}


# ------------------------------------------------------------------ the stack of one checkout


class Stack:
    """redis-server, one edge and one worker of ``tree``; stopped by PID."""

    def __init__(self, tree: Path, prof: Profile, sessions: int, logs: Path) -> None:
        self.redis = RedisServer(logs / "redis", appendonly=True).start()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AGENTIA_") and k not in ("OPENAI_API_KEY", "PYTHONPATH")}
        env.update(NO_USER_LIMITS, PYTHONPATH=str(tree), PYTHONUNBUFFERED="1",
                   AGENTIA_DEV="true", AGENTIA_REDIS_URL=self.redis.url,
                   AGENTIA_LOG_LEVEL="warning", AGENTIA_TRANSPORT="picows",
                   AGENTIA_DEMO_WORD_DELAY=str(prof.word_delay), AGENTIA_RATE_PER_S="1000",
                   AGENTIA_BURST="1000", AGENTIA_CONCURRENCY=str(max(256, sessions)),
                   AGENTIA_MAX_CONNECTIONS_PER_USER=str(sessions + 10))
        module = "launch.cli" if (tree / "launch" / "cli.py").exists() else "agentia.cli"
        self.logs = {"edge": logs / "edge.log", "worker": logs / "worker.log"}
        self.procs: list[Any] = []
        try:
            edge, info = start([sys.executable, "-m", module, "gateway", "--port", "0"], env,
                               "AGENTIA_EDGE_READY", 120, what=f"the edge of {tree}",
                               cwd=tree, stderr=self.logs["edge"])
            self.procs.append(edge)
            worker, _ = start([sys.executable, "-m", module, "worker"], env,
                              "AGENTIA_WORKER_READY", 120, what=f"the worker of {tree}",
                              cwd=tree, stderr=self.logs["worker"])
            self.procs.append(worker)
        except BaseException:
            self.stop()
            raise
        self.port = int(info["port"])
        assert self.redis.proc is not None
        self.pids = {"edge": edge.pid, "worker": worker.pid, "redis": self.redis.proc.pid}
        self.r = redis.Redis.from_url(self.redis.url)

    def probe(self) -> dict[str, Any]:
        """CPU-s of each process, and Redis commands by name (our INFO left out)."""
        stats = self.r.info("commandstats")
        cmds = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()
                if k != "cmdstat_info"}
        return {"cpu": {k: cpu_s(p) for k, p in self.pids.items()}, "cmds": cmds,
                "t": time.perf_counter()}

    def tracebacks(self) -> dict[str, int]:
        return {k: p.read_bytes().count(b"Traceback") if p.exists() else 0
                for k, p in self.logs.items()}

    def stop(self) -> None:
        stop_all(self.procs)
        self.redis.stop()


def delta(p0: dict[str, Any], p1: dict[str, Any]) -> dict[str, Any]:
    cmds = {k: v - p0["cmds"].get(k, 0) for k, v in p1["cmds"].items()}
    return {"cpu": {k: v - p0["cpu"][k] for k, v in p1["cpu"].items()},
            "cmds": {k: v for k, v in cmds.items() if v}, "t": p1["t"] - p0["t"]}


# ------------------------------------------------------------------ clients


@dataclass(slots=True)
class Tally:
    sent: int = 0
    acked: int = 0
    acks: list[float] = field(default_factory=list)
    turns: list[float] = field(default_factory=list)
    firsts: list[float] = field(default_factory=list)
    frames: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    text_chars: int = 0
    reply_chars: int = 0
    reply_words: int = 0


class Client:
    """One session's connection: sends turns, and resolves each one's future at its end."""

    def __init__(self, ws: Any, session: str, tally: Tally) -> None:
        self.ws, self.session, self.tally = ws, session, tally
        self.sent: dict[str, float] = {}
        self.ended: dict[str, asyncio.Future[None]] = {}
        self.cid_of: dict[int, str] = {}
        self.early: set[int] = set()  # ends seen before their ack
        self.streaming: set[str] = set()  # turns whose first text frame came
        self.n = 0

    async def send(self, text: str) -> asyncio.Future[None]:
        cid = f"{self.session}-{self.n}"
        self.n += 1
        fut = asyncio.get_running_loop().create_future()
        self.ended[cid] = fut
        self.sent[cid] = time.perf_counter()
        self.tally.sent += 1
        await self.ws.send(orjson.dumps({"type": "send", "id": cid, "text": text}).decode())
        return fut

    def _end(self, cid: str, now: float, ok: bool = True) -> None:
        fut = self.ended.get(cid)
        if fut is not None and not fut.done():
            fut.set_result(None)
            if ok:
                self.tally.turns.append(now - self.sent[cid])

    async def read(self) -> None:
        t = self.tally
        async for raw in self.ws:
            f = orjson.loads(raw)
            kind, now = f.get("type"), time.perf_counter()
            t.frames[kind] += 1
            if kind == "ack":
                t.acked += 1
                t.acks.append(now - self.sent[f["id"]])
                self.cid_of[f["offset"]] = f["id"]
                if f["offset"] in self.early:
                    self._end(f["id"], now)
            elif kind in TEXT_FRAMES or kind in ENDS:
                self._turn_frame(f, kind, now)
            elif kind == "error":
                t.errors[f.get("code", "?")] += 1
                if f.get("ref") in self.ended:  # a refused send: no turn, move on
                    self._end(f["ref"], now, ok=False)

    def _turn_frame(self, f: dict[str, Any], kind: str, now: float) -> None:
        t, cid = self.tally, self.cid_of.get(f.get("turn", -1))
        if kind in TEXT_FRAMES:
            t.text_chars += len(f.get("text", ""))
            if cid and cid not in self.streaming:
                self.streaming.add(cid)
                t.firsts.append(now - self.sent[cid])
            return
        if kind == "reply":
            t.reply_chars += len(f["text"])
            t.reply_words += len(f["text"].split())
        if cid is None:
            self.early.add(f["turn"])
        else:
            self._end(cid, now)


async def connect_all(port: int, n: int, tally: Tally) -> list[Client]:
    token = mint(DEV_SECRET, "bench-turnpath", 3600)
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> Client:
        async with sem:
            ws = await websockets.connect(
                f"ws://127.0.0.1:{port}/v1/ws?session=tp-{i}", compression=None,
                additional_headers={"Authorization": f"Bearer {token}"}, ping_interval=None)
            welcome = orjson.loads(await ws.recv())
            return Client(ws, str(welcome.get("session", f"tp-{i}")), tally)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def closed_loop(c: Client, text: str, until: float, grace: float) -> None:
    while time.perf_counter() < until:
        fut = await c.send(text)
        await asyncio.wait([fut], timeout=until + grace - time.perf_counter())
        if not fut.done():  # counted as lost below if it was acked
            return


async def fixed_rate(clients: list[Client], text: str, rate: float, until: float) -> None:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() < until:
        await asyncio.sleep(max(0.0, t0 + n / rate - time.perf_counter()))
        await clients[n % len(clients)].send(text)
        n += 1


async def drive(stack: Stack, prof: Profile, a: argparse.Namespace) -> dict[str, Any]:
    """Connect, idle (the baseline), load, wait for every acked turn; probes around each."""
    tally = Tally()
    clients = await connect_all(stack.port, a.sessions, tally)
    readers = [asyncio.create_task(c.read()) for c in clients]
    try:
        p0 = stack.probe()
        await asyncio.sleep(a.idle)
        p1 = stack.probe()
        until = time.perf_counter() + a.seconds
        if a.rate:
            await fixed_rate(clients, prof.text, a.rate, until)
        else:
            await asyncio.gather(*(closed_loop(c, prof.text, until, a.grace) for c in clients))
        sending = time.perf_counter() - p1["t"]
        pending = [f for c in clients for f in c.ended.values()]
        await asyncio.wait(pending, timeout=a.grace)
        p2 = stack.probe()
        lost = sum(1 for c in clients for cid, f in c.ended.items()
                   if not f.done() and cid in c.cid_of.values())
        return {"idle": delta(p0, p1), "load": delta(p1, p2), "tally": tally,
                "lost": lost, "sending_s": sending, "sessions": [c.session for c in clients]}
    finally:
        for r in readers:
            r.cancel()
        await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)


# ------------------------------------------------------------------ the session log


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


# ------------------------------------------------------------------ one run


def net_per_turn(run: dict[str, Any], turns: int) -> dict[str, Any]:
    """CPU-ms per turn of each process and Redis commands per turn, less the idle rate."""
    idle, load = run["idle"], run["load"]
    out: dict[str, Any] = {}
    for k, used in load["cpu"].items():
        rate = idle["cpu"][k] / idle["t"]
        out[f"{k}_cpu_ms_per_turn"] = round((used - rate * load["t"]) / turns * 1e3, 3)
        out[f"{k}_idle_cores"] = round(rate, 4)
    idle_cmds = sum(idle["cmds"].values()) / idle["t"]
    out["redis_cmds_per_turn"] = round(
        (sum(load["cmds"].values()) - idle_cmds * load["t"]) / turns, 1)
    out["redis_idle_cmds_per_s"] = round(idle_cmds, 1)
    top = Counter(load["cmds"]).most_common(12)
    out["redis_cmds_per_turn_by_name"] = {k: round(v / turns, 2) for k, v in top}
    return out


def latencies(t: Tally) -> dict[str, float]:
    ms = 1e3
    return {"ack_p50_ms": round(pct(t.acks, 50) * ms, 2),
            "ack_p99_ms": round(pct(t.acks, 99) * ms, 2),
            "turn_p50_ms": round(pct(t.turns, 50) * ms, 1),
            "turn_p99_ms": round(pct(t.turns, 99) * ms, 1),
            "first_text_p50_ms": round(pct(t.firsts, 50) * ms, 1)}


def figures(run: dict[str, Any], prof: Profile, r: redis.Redis, sample: int) -> dict[str, Any]:
    t: Tally = run["tally"]
    ended = len(t.turns)
    turns = max(1, ended)
    text_frames = sum(t.frames[k] for k in TEXT_FRAMES)
    out: dict[str, Any] = {
        "profile": prof.name, "word_delay_s": prof.word_delay, "sent": t.sent,
        "acked": t.acked, "ended": ended, "lost": run["lost"], "errors": dict(t.errors),
        "ends": {k: t.frames[k] for k in ENDS}, "turns_per_s": round(ended / run["load"]["t"], 1),
        "window_s": round(run["load"]["t"], 2), "sending_s": round(run["sending_s"], 2),
        **latencies(t),
        "text_frames_per_turn": round(text_frames / turns, 1),
        "text_frames_by_type": {k: t.frames[k] for k in TEXT_FRAMES},
        "partial_frames": t.frames["partial"],
        "reply_words_per_turn": round(t.reply_words / turns, 1),
        "reply_chars_per_turn": round(t.reply_chars / turns, 1),
        **net_per_turn(run, turns)}
    out["redis_cmds_per_text_frame"] = round(
        out["redis_cmds_per_turn"] * turns / text_frames, 2) if text_frames else None
    words = t.reply_words / turns
    out["redis_cpu_ms_per_300_words"] = round(
        out["redis_cpu_ms_per_turn"] * 300 / words, 3) if words else None
    out["log"] = log_figures(r, run["sessions"][:sample])
    return out


def run_level(tree: Path, prof: Profile, a: argparse.Namespace, logs: Path) -> dict[str, Any]:
    stack = Stack(tree, prof, a.sessions, logs)
    try:
        run = asyncio.run(drive(stack, prof, a))
        fig = figures(run, prof, stack.r, a.log_sample)
        fig["tracebacks"] = stack.tracebacks()
        return fig
    finally:
        stack.r.close()
        stack.stop()


# ------------------------------------------------------------------ summary and entry


KEYS = ("redis_cmds_per_text_frame", "redis_cmds_per_turn", "redis_cpu_ms_per_turn",
        "redis_cpu_ms_per_300_words", "edge_cpu_ms_per_turn", "worker_cpu_ms_per_turn",
        "turns_per_s", "ack_p50_ms", "ack_p99_ms", "turn_p50_ms", "turn_p99_ms",
        "text_frames_per_turn", "reply_words_per_turn")


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per checkout and profile: the mean over rounds of each figure, with its spread."""
    out = []
    for tree, name in dict.fromkeys((r["tree"], r["profile"]) for r in runs):
        rs = [r for r in runs if r["tree"] == tree and r["profile"] == name]
        row: dict[str, Any] = {"tree": tree, "commit": rs[0]["commit"], "profile": name,
                               "rounds": len(rs), "lost": sum(r["lost"] for r in rs)}
        for k in (*KEYS, "log.bytes_per_turn", "log.ratio_to_reply",
                  "log.ratio_to_reply_without_user"):
            vals = [v for r in rs if (v := _get(r, k)) is not None]
            if vals:
                row[k] = {"mean": round(statistics.fmean(vals), 3),
                          "min": min(vals), "max": max(vals)}
        out.append(row)
    return out


def _get(run: dict[str, Any], dotted: str) -> Any:
    value: Any = run
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _line(f: dict[str, Any]) -> str:
    return (f"{Path(f['tree']).name:>14} {f['commit'][:8]} r{f['round']} {f['profile']:>5} "
            f"turns {f['ended']:>5} ({f['turns_per_s']}/s) lost {f['lost']} | "
            f"cmds/frame {f['redis_cmds_per_text_frame']} cmds/turn {f['redis_cmds_per_turn']} | "
            f"CPU-ms/turn redis {f['redis_cpu_ms_per_turn']} edge {f['edge_cpu_ms_per_turn']} "
            f"worker {f['worker_cpu_ms_per_turn']} | log {f['log']['ratio_to_reply']}x reply | "
            f"ack p99 {f['ack_p99_ms']} turn p50 {f['turn_p50_ms']} ms")


def run_all(a: argparse.Namespace) -> list[dict[str, Any]]:
    profs = profiles(a)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-turnpath-") as tmp:
        for rnd in range(a.rounds):
            for tree in a.tree if rnd % 2 == 0 else a.tree[::-1]:
                for name in a.profiles:
                    logs = Path(tmp) / f"{rnd}-{tree.name}-{name}"
                    fig = {"tree": str(tree), "commit": tree_commit(tree), "round": rnd,
                           "sessions": a.sessions, "rate": a.rate or None,
                           **run_level(tree, profs[name], a, logs)}
                    runs.append(fig)
                    print(_line(fig), file=sys.stderr, flush=True)
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", type=Path, action="append", default=[],
                   help="a checkout whose edge and worker to run (repeatable; default: this one)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--profiles", default="long,short", help="comma-separated: long, short")
    p.add_argument("--sessions", type=int, default=200, help="client sessions (1 reader each)")
    p.add_argument("--rate", type=float, default=0.0,
                   help="total turns/s over the sessions (default 0: each in a closed loop)")
    p.add_argument("--seconds", type=float, default=20.0, help="sending time of each run")
    p.add_argument("--idle", type=float, default=3.0, help="idle baseline, seconds")
    p.add_argument("--grace", type=float, default=10.0,
                   help="after sending, seconds for acked turns to end (then: lost)")
    p.add_argument("--long-words", type=int, default=300)
    p.add_argument("--long-word-delay", type=float, default=0.02)
    p.add_argument("--short-word-delay", type=float, default=0.03)
    p.add_argument("--log-sample", type=int, default=20, help="sessions whose log is read")
    p.add_argument("--record", nargs="?", const="turnpath", metavar="NAME",
                   help="write loadtest/results/<NAME>.json (default name: turnpath)")
    p.add_argument("--notes", default="")
    a = p.parse_args()
    a.profiles = a.profiles.split(",")
    if not set(a.profiles) <= {"long", "short"}:
        p.error("--profiles: long and/or short")
    if not (1 <= a.sessions <= 2000 and 0 < a.seconds <= 30 and a.grace <= 30 and a.idle > 0):
        p.error("--sessions 1-2000, --seconds at most 30, --grace at most 30, --idle > 0")
    a.tree = [t.resolve() for t in a.tree] or [ROOT]
    runs = run_all(a)
    figs = {"runs": runs, "summary": summary(runs), "sessions": a.sessions,
            "rate": a.rate or None, "seconds": a.seconds, "idle_s": a.idle}
    print(orjson.dumps(figs["summary"], option=orjson.OPT_INDENT_2).decode())
    if a.record is not None:
        print(f"recorded {record(a.record, figs, notes=a.notes)}", file=sys.stderr)


if __name__ == "__main__":
    main()
