"""Worker benchmark (issue 13): one worker process's CPU per turn, and how many turns it keeps
in flight against a slow streaming model, with the code of one or more checkouts side by side.

For each ``--tree`` (repeatable; default this checkout) and each of ``--rounds`` rounds (trees
alternated), a fresh redis-server and one ``agentia worker`` of that checkout, with its default
settings, are started. Turns go straight onto the bus (``Bus.submit``, no edge); this process
plays an edge node: it registers every session and reads its delivery stream, so it sees each
turn's events as a client would (``turn_start``, the first reply text, the end).

* ``cpu``: a model that costs ~nothing: the demo model with no delay between words and/or
  (``--cpu-models``) the stub streaming a ``--cpu-reply-tokens`` reply at once (then the OpenAI
  client and the SDK's Chat Completions adapter count); ``--sessions`` sessions x ``--turns``
  turns each, all submitted at once. Worker CPU-ms per turn = the worker's CPU (/proc) from the
  first submit to the last end, less what it burns idle, / turns; and redis-server's bytes sent
  and CPU a turn over the same span (``INFO``: the worker's replies and this process's delivery
  reads; a turn's memory read was most of the bytes once memories were long, session 17).
* ``inflight``: ``loadtest/openai_stub.py`` as the model (``--tokens-per-s`` per stream,
  ``--reply-tokens`` words per reply) and ``--streams`` sessions, each sending its next turn as
  soon as the last ended, for ``--seconds``. Figures: turns in flight (started, not ended; the
  most reached and the mean over the steady part), worker cores used (CPU-s / s over the
  steady part: from the first moment in flight reached 90 % of its most), turns ended and
  unfinished (submitted, not ended by the end of the grace: queued or still streaming),
  time to first reply text p50/p99 (from the submit), the pace of each reply (model tokens/s
  from its first text to its end) and the CPU of redis-server, the stub and this process;
  and the worker's CPU per model token while the turns stream (from the first moment 90 % of
  the most turns streaming at once were streaming, to the end of the grace: the turns' starts
  left out; ``worker_us_per_token_streaming``).

Both modes also give the worker's peak resident memory (``worker_peak_rss_mib``, VmHWM at the
end of the run; since session 15, when the worker's garbage collector was tuned).

    python -m loadtest.bench_worker --tree /work/wt/before --tree . --record

``--model-clients openai,lean`` sets ``AGENTIA_MODEL_CLIENT`` per ``--tree`` (in order; a tree may
be given twice to run it with each client); without it the worker inherits the environment.

Results: ``loadtest/results/worker-cpu.json`` and ``worker-inflight.json``; docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from agentia import supervise
from launch.redis_server import RedisServer
from loadtest.attack.edgeproc import tree_commit
from loadtest.bench_core import cpu_s, pct
from loadtest.record import record
from sessions.bus import Bus, connect

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


async def _deliveries(bus: Bus, tally: Tally, stop: asyncio.Event) -> None:
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


async def _open(bus: Bus, sessions: list[str]) -> None:
    await bus.heartbeat_node(NODE)
    for i in range(0, len(sessions), 200):
        batch = sessions[i:i + 200]
        await asyncio.gather(*(bus.open_session(s, f"u{n % 50}", NODE)
                               for n, s in enumerate(batch)))


async def _submit(bus: Bus, tally: Tally, sid: str, n: int) -> tuple[str, int]:
    t = time.monotonic()
    sub = await bus.submit(sid, f"c{n}", f"turn {n} of {sid}", user="bench")
    tally.submitted[(sid, sub.offset)] = t
    return sid, sub.offset


# ------------------------------------------------------------------ cpu per turn


async def run_cpu(stack: Stack, a: argparse.Namespace) -> dict[str, Any]:
    assert stack.redis is not None
    bus, tally, stop = Bus(connect(stack.redis.url), prefix="agentia"), Tally(), asyncio.Event()
    sessions = [f"cpu-{n}" for n in range(a.sessions)]
    reader = asyncio.create_task(_deliveries(bus, tally, stop))
    try:
        await _open(bus, sessions)
        idle0, t0 = stack.worker_cpu(), time.monotonic()
        await asyncio.sleep(a.idle)
        idle_rate = (stack.worker_cpu() - idle0) / (time.monotonic() - t0)
        redis0 = await _redis_spent(bus)
        cpu0, start = stack.worker_cpu(), time.monotonic()
        for t in range(a.turns):
            await asyncio.gather(*(_submit(bus, tally, s, t) for s in sessions))
        total = a.sessions * a.turns
        deadline = start + a.timeout
        while len(tally.ended) < total and time.monotonic() < deadline:
            tally.an_end.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tally.an_end.wait(), 1)
        wall = max(t for t, _ in tally.ended.values()) - start if tally.ended else 0.0
        cpu = stack.worker_cpu() - cpu0 - idle_rate * wall
        peak = stack.worker_peak_mib()
        redis_out, redis_cpu = (b - a_ for a_, b in zip(redis0, await _redis_spent(bus),
                                                        strict=True))
    finally:
        stop.set()
        await reader
        await bus.close()
    done = sum(1 for _, kind in tally.ended.values() if kind == b"reply")
    return {"turns": total, "replies": done, "unfinished": total - len(tally.ended),
            "wall_s": round(wall, 2), "turns_per_s": round(done / wall, 1) if wall else 0,
            "worker_cpu_ms_per_turn": round(cpu * 1000 / max(1, done), 3),
            "worker_idle_cores": round(idle_rate, 4), "worker_peak_rss_mib": peak,
            "history_items_mean": a.turns - 1,
            "redis_out_kib_per_turn": round(redis_out / 1024 / max(1, done), 2),
            "redis_cpu_ms_per_turn": round(redis_cpu * 1000 / max(1, done), 3)}


async def _redis_spent(bus: Bus) -> tuple[float, float]:
    """redis-server's bytes sent (to the worker and this process's reads) and its CPU-s so
    far (``INFO``): a turn's memory read is most of the bytes once memories are long."""
    info = await bus.redis.info()
    return (float(info["total_net_output_bytes"]),
            float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))


# ------------------------------------------------------------------ turns in flight


async def _closed_loop(bus: Bus, tally: Tally, sid: str, until: float) -> None:
    n = 0
    while time.monotonic() < until:
        wake = tally.waiters[sid] = asyncio.Event()
        key = await _submit(bus, tally, sid, n)
        n += 1
        while key not in tally.ended:
            await wake.wait()
            wake.clear()


async def _sample(stack: Stack, tally: Tally, stop: asyncio.Event,
                  out: list[tuple[float, float, int, int, int]]) -> None:
    while not stop.is_set():
        out.append((time.monotonic(), stack.worker_cpu(), tally.in_flight(), tally.tokens,
                    tally.streaming()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def run_inflight(stack: Stack, a: argparse.Namespace, streams: int) -> dict[str, Any]:
    assert stack.redis is not None
    bus, tally = Bus(connect(stack.redis.url, 256), prefix="agentia"), Tally()
    stop, stop_sampling = asyncio.Event(), asyncio.Event()
    sessions = [f"fl-{n}" for n in range(streams)]
    samples: list[tuple[float, float, int, int, int]] = []
    # the reader on a pool of its own: 1,000 submitting loops on a starved box kept every
    # connection of the shared pool past its 5 s wait, and the reader's failure ended the run
    reading = Bus(connect(stack.redis.url, 4), prefix="agentia")
    reader = asyncio.create_task(_deliveries(reading, tally, stop))
    try:
        await _open(bus, sessions)
        start, stub0 = time.monotonic(), cpu_s(stack.stub.pid) if stack.stub else 0.0
        redis0, bench0 = cpu_s(stack.redis_pid()), time.process_time()
        sampler = asyncio.create_task(_sample(stack, tally, stop_sampling, samples))
        until = start + a.seconds
        loops = [asyncio.create_task(_closed_loop(bus, tally, s, until)) for s in sessions]
        await asyncio.wait(loops, timeout=a.seconds + a.grace)
        stop_sampling.set()
        await sampler
        for t in loops:
            t.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    finally:
        stop.set()
        await reader
        await bus.close()
        await reading.close()
    assert stack.stub is not None
    out = _inflight_figures(tally, samples, until, a.reply_tokens)
    out["streams"] = streams
    wall = time.monotonic() - start
    out["stub_cores"] = round((cpu_s(stack.stub.pid) - stub0) / wall, 3)
    out["redis_cores"] = round((cpu_s(stack.redis_pid()) - redis0) / wall, 3)
    out["bench_cores"] = round((time.process_time() - bench0) / wall, 3)
    out["worker_peak_rss_mib"] = stack.worker_peak_mib()
    return out


def _inflight_figures(tally: Tally, samples: list[tuple[float, float, int, int, int]],
                      until: float, tokens: int) -> dict[str, Any]:
    most = max((s[2] for s in samples), default=0)
    from_i = next((i for i, s in enumerate(samples) if s[2] >= 0.9 * most), 0)
    steady = [s for s in samples[from_i:] if s[0] <= until]
    if len(steady) < 2:  # in flight peaked at the end of the load: take the grace too
        steady = samples[from_i:]
    cores = ((steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0])
             if len(steady) > 1 else float("nan"))
    # worker CPU per model token while streaming: from the first moment 90 % of the most
    # turns ever streaming at once were streaming (their turns' starts behind them: a starved
    # worker starts 1,000 turns for tens of seconds) to the last sample, the grace included
    # (no turn is submitted then: the streams run out); everything included (the socket, the
    # stream's decoding, the turn's text handling, the pieces' pipelines, the turns that end
    # and start again)
    top = max((s[4] for s in samples), default=0)
    first = next((s[0] for s in samples if top and s[4] >= 0.9 * top), None)
    flowing = [s for s in samples if first is not None and s[0] >= first]
    streamed = flowing[-1][3] - flowing[0][3] if len(flowing) > 1 else 0
    per_token = ((flowing[-1][1] - flowing[0][1]) / streamed * 1e6 if streamed
                 else float("nan"))
    flowing_s = flowing[-1][0] - flowing[0][0] if len(flowing) > 1 else 0.0
    ttfd = [(tally.first[k] - t) * 1000 for k, t in tally.submitted.items() if k in tally.first]
    replies = sum(1 for _, kind in tally.ended.values() if kind == b"reply")
    # the pace each reply reached from its first text to its end, in model tokens per second
    pace = [(tokens - 1) / (end - tally.first[k]) for k, (end, kind) in tally.ended.items()
            if kind == b"reply" and k in tally.first and end > tally.first[k]]
    return {
        "max_in_flight": most,
        "mean_in_flight_steady": round(statistics.fmean(s[2] for s in steady), 1)
        if steady else 0,
        "steady_s": round(steady[-1][0] - steady[0][0], 1) if len(steady) > 1 else 0,
        "worker_cores_steady": round(cores, 3),
        "streaming_most": top, "streaming_s": round(flowing_s, 1),
        "tokens_per_s_streaming": round(streamed / flowing_s) if flowing_s else 0,
        "worker_cores_streaming": round((flowing[-1][1] - flowing[0][1]) / flowing_s, 3)
        if flowing_s else float("nan"),
        "worker_us_per_token_streaming": round(per_token, 2),
        "turns_submitted": len(tally.submitted), "replies": replies,
        "turn_errors": sum(1 for _, kind in tally.ended.values() if kind == b"turn_error"),
        "unfinished": len(tally.submitted) - len(tally.ended),
        "first_text_ms_p50": round(pct(ttfd, 50), 1), "first_text_ms_p99": round(pct(ttfd, 99), 1),
        "text_events_per_reply": round(tally.texts / replies, 1) if replies else 0,
        "reply_tokens_per_s_p50": round(pct(pace, 50), 1),
        "reply_tokens_per_s_p10": round(pct(pace, 10), 1),
    }


# ------------------------------------------------------------------ driver


def one(tree: Path, mode: str, a: argparse.Namespace, logs: Path,
        streams: int = 0, client: str = "") -> dict[str, Any]:
    env = {"AGENTIA_DEMO_WORD_DELAY": "0"}
    if client:
        env["AGENTIA_MODEL_CLIENT"] = client
    if a.concurrency:
        env["AGENTIA_CONCURRENCY"] = str(a.concurrency)
    stub = None
    if mode == "cpu-stub":  # the stub at once: the OpenAI client and the SDK's adapter count
        stub = ["--tokens-per-s", "0", "--reply-tokens", str(a.cpu_reply_tokens)]
    elif mode == "inflight":
        stub = ["--tokens-per-s", str(a.tokens_per_s), "--reply-tokens", str(a.reply_tokens),
                "--tokens-per-chunk", str(a.tokens_per_chunk)]
    stack = Stack(tree, logs, env)
    try:  # stopped even when a child never gets ready (start raises) or we are terminated
        stack.start(stub)
        figures = asyncio.run(run_cpu(stack, a) if mode.startswith("cpu")
                              else run_inflight(stack, a, streams))
    finally:
        stack.stop()
    log = (logs / f"worker-{tree.name}.log").read_bytes()
    figures.update(tree=str(tree), commit=tree_commit(tree), tracebacks=log.count(b"Traceback"),
                   model="stub" if stub else "demo",
                   model_client=client or os.environ.get("AGENTIA_MODEL_CLIENT")
                   or "the tree's default")
    if figures["tracebacks"]:  # its last line, to tell a shutdown race from a real failure
        tail = log[log.index(b"Traceback"):].split(b"\n\n")[0].strip().splitlines()
        figures["traceback_sample"] = tail[-1].decode(errors="replace")[:300]
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", type=Path, help="checkout (repeatable)")
    ap.add_argument("--modes", default="cpu,inflight")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=0, help="0: the tree's default")
    ap.add_argument("--sessions", type=int, default=100, help="cpu: sessions")
    ap.add_argument("--turns", type=int, default=5, help="cpu: turns per session")
    ap.add_argument("--cpu-models", default="demo,stub",
                    help="cpu: the demo model and/or the stub streaming at once")
    ap.add_argument("--cpu-reply-tokens", type=int, default=30, help="cpu: the stub's reply")
    ap.add_argument("--idle", type=float, default=2.0, help="cpu: idle baseline, s")
    ap.add_argument("--timeout", type=float, default=300.0, help="cpu: at most, s")
    ap.add_argument("--streams", type=lambda v: [int(x) for x in v.split(",")],
                    default=[1000], help="inflight: sessions (a comma list: one run each)")
    ap.add_argument("--seconds", type=float, default=30.0, help="inflight: load window")
    ap.add_argument("--grace", type=float, default=30.0, help="inflight: to finish, s")
    ap.add_argument("--tokens-per-s", type=float, default=50.0)
    ap.add_argument("--reply-tokens", type=int, default=300)
    ap.add_argument("--tokens-per-chunk", type=int, default=1)
    ap.add_argument("--logs", help="keep each run's logs under this directory")
    ap.add_argument("--record", action="store_true", help="write loadtest/results/worker-*.json")
    ap.add_argument("--name", default="worker", help="record as NAME-cpu, NAME-inflight")
    ap.add_argument("--model-clients", default="",
                    help="AGENTIA_MODEL_CLIENT per --tree, a comma list in the same order")
    a = ap.parse_args()
    # a SIGTERM (a driver's timeout) unwinds like Ctrl-C: every stack's finally stops its
    # redis-server, stub and worker instead of leaving them running
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    trees = [t.resolve() for t in (a.tree or [ROOT])]
    clients = a.model_clients.split(",") if a.model_clients else [""] * len(trees)
    if len(clients) != len(trees):
        ap.error("--model-clients needs one client per --tree")
    runs_of = list(zip(trees, clients, strict=True))
    with contextlib.ExitStack() as keep:
        tmp = a.logs or keep.enter_context(tempfile.TemporaryDirectory(prefix="bench-worker-"))
        for mode in a.modes.split(","):
            runs = []
            for r in range(a.rounds):
                for tree, client in runs_of if r % 2 == 0 else runs_of[::-1]:
                    for streams, model in _variants(mode, a):
                        res = one(tree, model, a, Path(tmp), streams, client)
                        res["round"] = r
                        print(mode, orjson.dumps(res).decode(), flush=True)
                        runs.append(res)
            if a.record:
                doc = {"runs": runs, "params": _params(a, mode)}
                if mode == "cpu":
                    doc["summary"] = cpu_summary(runs, trees[-1])
                else:
                    doc["summary"] = stream_summary(runs, trees[-1])
                print(record(f"{a.name}-{mode}", doc, notes=_NOTES[mode]))


def cpu_summary(runs: list[dict[str, Any]], tree: Path) -> dict[str, Any]:
    """The last ``--tree``'s (the checkout under test) worker CPU-s per turn, mean of its
    rounds, per model: ``agentia capacity`` reads the demo model's as the worker's plain turn
    (loadtest/capacity_figures.py, ``worker_turn_cpu_now``)."""
    out: dict[str, Any] = {"tree": str(tree)}
    for model in ("demo", "stub"):
        mine = [r for r in runs if r["tree"] == str(tree) and r["model"] == model]
        if mine:
            out["commit"] = mine[0]["commit"]
            out[f"{model}_worker_cpu_s_per_turn"] = round(
                statistics.mean(r["worker_cpu_ms_per_turn"] for r in mine) / 1000, 6)
    return out


def stream_summary(runs: list[dict[str, Any]], tree: Path) -> dict[str, Any]:
    """The last ``--tree``'s worker CPU-s per streamed token while streaming, mean of its runs
    at the most streams: ``agentia capacity`` reads it as the worker's cost per token of an
    OpenAI-compatible model (loadtest/capacity_figures.py, ``worker_token_cpu_stream``)."""
    mine = [r for r in runs if r["tree"] == str(tree)
            and isinstance(r.get("worker_us_per_token_streaming"), int | float)
            and r["worker_us_per_token_streaming"] == r["worker_us_per_token_streaming"]]
    if not mine:
        return {"tree": str(tree)}
    most = max(r["streams"] for r in mine)
    mine = [r for r in mine if r["streams"] == most]
    return {"tree": str(tree), "commit": mine[0]["commit"], "streams": most,
            "worker_cpu_s_per_token": round(statistics.mean(
                r["worker_us_per_token_streaming"] for r in mine) / 1e6, 9)}


def _variants(mode: str, a: argparse.Namespace) -> list[tuple[int, str]]:
    """(streams, what to run) for each run of ``mode`` in one round."""
    if mode == "cpu":
        return [(0, "cpu" if m == "demo" else "cpu-stub") for m in a.cpu_models.split(",")]
    return [(n, "inflight") for n in a.streams]


def _params(a: argparse.Namespace, mode: str) -> dict[str, Any]:
    if mode == "cpu":
        return {"sessions": a.sessions, "turns_per_session": a.turns,
                "models": a.cpu_models, "stub_reply_tokens": a.cpu_reply_tokens}
    return {"streams": a.streams, "seconds": a.seconds, "tokens_per_s": a.tokens_per_s,
            "reply_tokens": a.reply_tokens, "tokens_per_chunk": a.tokens_per_chunk,
            "concurrency": a.concurrency or "the tree's default"}


_NOTES = {
    "cpu": "one worker process, demo model with no word delay, turns submitted on the bus; "
           "CPU of the worker (/proc) less its idle rate, per turn",
    "inflight": "one worker process against loadtest/openai_stub.py; turns in flight seen "
                "on a node delivery stream; cores over the steady part",
}

if __name__ == "__main__":
    main()
