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
end of the run; since session 15, when the worker's garbage collector was tuned) and, since
session 20, the machine's idle share over the measured span (``machine_idle_share``, /proc/stat
as bench_turnpath's: on a shared machine, how far to trust the CPU figures).

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
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from loadtest.attack.edgeproc import tree_commit
from loadtest.proc_stats import idle_share, machine_ticks
from loadtest.record import record
from loadtest.worker_inflight import run_inflight, stream_summary
from loadtest.worker_stack import ROOT, Stack, Tally, deliveries, open_sessions, submit
from sessions.bus import Bus, connect
from sessions.keys import MAX_PENDING_TURNS

# ------------------------------------------------------------------ cpu per turn


async def run_cpu(stack: Stack, a: argparse.Namespace) -> dict[str, Any]:
    assert stack.redis is not None
    bus, tally, stop = Bus(connect(stack.redis.url), prefix="agentia"), Tally(), asyncio.Event()
    sessions = [f"cpu-{n}" for n in range(a.sessions)]
    reader = asyncio.create_task(deliveries(bus, tally, stop))
    try:
        await open_sessions(bus, sessions)
        idle0, t0 = stack.worker_cpu(), time.monotonic()
        await asyncio.sleep(a.idle)
        idle_rate = (stack.worker_cpu() - idle0) / (time.monotonic() - t0)
        redis0 = await _redis_spent(bus)
        cpu0, start, ticks0 = stack.worker_cpu(), time.monotonic(), machine_ticks()
        for t in range(a.turns):
            await asyncio.gather(*(submit(bus, tally, s, t) for s in sessions))
        total = a.sessions * a.turns
        deadline = start + a.timeout
        while len(tally.ended) < total and time.monotonic() < deadline:
            tally.an_end.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tally.an_end.wait(), 1)
        wall = max(t for t, _ in tally.ended.values()) - start if tally.ended else 0.0
        cpu = stack.worker_cpu() - cpu0 - idle_rate * wall
        peak, busy = stack.worker_peak_mib(), idle_share(ticks0, machine_ticks())
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
            "redis_cpu_ms_per_turn": round(redis_cpu * 1000 / max(1, done), 3),
            "machine_idle_share": busy}


async def _redis_spent(bus: Bus) -> tuple[float, float]:
    """redis-server's bytes sent (to the worker and this process's reads) and its CPU-s so
    far (``INFO``): a turn's memory read is most of the bytes once memories are long."""
    info = await bus.redis.info()
    return (float(info["total_net_output_bytes"]),
            float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))


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
                   or "the tree's default", worker_env=worker_env(env))
    if figures["tracebacks"]:  # its last line, to tell a shutdown race from a real failure
        tail = log[log.index(b"Traceback"):].split(b"\n\n")[0].strip().splitlines()
        figures["traceback_sample"] = tail[-1].decode(errors="replace")[:300]
    return figures


SECRET_WORDS = ("SECRET", "KEY", "TOKEN", "PASSWORD")


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """The ``AGENTIA_*`` settings the worker was started with (the bench's own and the ones it
    inherited; not the run's Redis URL, and no secret's value): what a record's CPU figures
    were measured under (e.g. ``AGENTIA_MODEL_READ_MS``)."""
    seen = {k: v for k, v in {**os.environ, **env}.items()
            if k.startswith("AGENTIA_") and k != "AGENTIA_REDIS_URL"}
    return {k: "(set)" if any(w in k for w in SECRET_WORDS) else v
            for k, v in sorted(seen.items())}


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
    if not 1 <= a.turns <= MAX_PENDING_TURNS:  # all queued at once: SUBMIT refuses the rest
        ap.error(f"--turns must be 1-{MAX_PENDING_TURNS} (a session holds at most "
                 f"{MAX_PENDING_TURNS} pending turns: all of them are submitted at once)")
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
