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
Per run: Redis commands (INFO commandstats, a script's inner calls included, our INFO excluded) per
turn and per reply-text frame; Redis's reads and replies per turn (INFO stats
``total_reads_processed``/``total_writes_processed``: its event loop's wake-ups, what most of its
CPU per turn follows) and its command time (commandstats usec, each command once, the scripts'
apart: :func:`loadtest.turnpath.figures.command_time`); CPU-ms per turn of redis-server
(its INFO cpu, microseconds), the edge and the worker (/proc, 10 ms ticks: less precise, but
they burn ten times more) less what each burns idle; for redis-server also its whole CPU over
the load (``_total``) and what a twin redis-server with no client burns in the same seconds
(``redis_bare_cpu_ms_per_turn``: serverCron alone), see
:func:`loadtest.turnpath.figures.redis_totals`; turns/s; ack and turn latency p50/p99; lost
turns (acked, never ended by ``reply``/``cancelled``/``turn_error``); and for ``--log-sample``
sessions the session log's bytes per finished turn (XRANGE: entry ids, field names and values)
against the reply text; and the machine's idle share over the load (/proc/stat: on a shared
machine, how far to trust the CPU).

    python -m loadtest.bench_turnpath --tree /work/wt/before --tree . --rounds 2 \
        --sessions 40 --sessions 200 --record

Throughput (issue 13): ``--rate R1 --rate R2 ...`` gives one run per rate, and the record's
``throughput`` the highest rate each checkout sustained (loadtest/turnpath/throughput.py: none
lost or refused, every turn ended, ack p99 <= 50 ms, turn p99 <= 1 s) with each process's
CPU-ms per turn at it; ``--workers N`` and ``--edges M`` (one port each, the sessions spread
over them) size the stack. The load generator (this process, picows clients) shares the
cores: its own CPU per turn is given as ``loadgen``.

    python -m loadtest.bench_turnpath --tree /work/wt/before --tree . --profiles short \
        --short-word-delay 0 --sessions 200 --rate 300 --rate 600 --rate 1000 --seconds 10 \
        --grace 15 --workers 2 --rounds 2 --record turnpath-rate

A tree may carry environment variables for its edge and worker, ``PATH+NAME=VALUE+...``: the
same checkout with and without a setting are then two trees of one run (e.g. tracing on,
``--tree .+OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318``, with ``loadtest/otlp_sink.py``
receiving).

Results: ``loadtest/results/turnpath.json`` (``--record NAME``); docs/benchmarks.md. The stack
and the clients: loadtest/turnpath/.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis

from loadtest.attack.edgeproc import tree_commit
from loadtest.record import record
from loadtest.turnpath.clients import ENDS, TEXT_FRAMES, Tally, closed_loop, connect_all, fixed_rate
from loadtest.turnpath.figures import latencies, net_per_turn
from loadtest.turnpath.stack import Stack, delta, log_figures
from loadtest.turnpath.throughput import best

ROOT = Path(__file__).resolve().parent.parent
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


async def drive(stack: Stack, prof: Profile, sessions: int, a: argparse.Namespace,
                rate: float = 0.0) -> dict[str, Any]:
    """Connect, idle (the baseline), load, wait for every acked turn; probes around each."""
    tally = Tally()
    clients = await connect_all(stack.ports, sessions, tally)
    readers = [asyncio.create_task(c.read()) for c in clients]
    try:
        p0 = stack.probe()
        await asyncio.sleep(a.idle)
        p1 = stack.probe()
        until = time.perf_counter() + a.seconds
        if rate:
            await fixed_rate(clients, prof.text, rate, until)
        else:
            await asyncio.gather(*(closed_loop(c, prof.text, until, a.grace) for c in clients))
        pending = [f for c in clients for f in c.ended.values()]
        await asyncio.wait(pending, timeout=a.grace)
        p2 = stack.probe()
        lost = sum(c.lost() for c in clients)
        return {"idle": delta(p0, p1), "load": delta(p1, p2), "tally": tally,
                "lost": lost, "sessions": [c.session for c in clients]}
    finally:
        for r in readers:
            r.cancel()
        await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)


# ------------------------------------------------------------------ one run


def figures(run: dict[str, Any], prof: Profile, r: redis.Redis, sample: int) -> dict[str, Any]:
    """The figures of one run (``run``: what :func:`drive` returned)."""
    t: Tally = run["tally"]
    ended = len(t.turns)
    turns = max(1, ended)
    text_frames = sum(t.frames[k] for k in TEXT_FRAMES)
    out: dict[str, Any] = {
        "profile": prof.name, "word_delay_s": prof.word_delay, "sent": t.sent,
        "acked": t.acked, "ended": ended, "lost": run["lost"], "errors": dict(t.errors),
        "ends": {k: t.frames[k] for k in ENDS}, "turns_per_s": round(ended / run["load"]["t"], 1),
        "window_s": round(run["load"]["t"], 2),
        "machine_idle_share": run["load"]["machine_idle_share"],
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
    # a path that keeps up ends a turn about when the model stops streaming; a saturated one
    # later, with fewer and larger coalesced frames: compare per-frame figures kept up
    out["stream_ms"] = round(words * prof.word_delay * 1e3, 1)
    out["turn_p50_over_stream"] = round(out["turn_p50_ms"] / out["stream_ms"], 2) \
        if out["stream_ms"] else None
    out["redis_cpu_ms_per_300_words"] = round(
        out["redis_cpu_ms_per_turn"] * 300 / words, 3) if words else None
    out["log"] = log_figures(r, run["sessions"][:sample])
    return out


@dataclass(frozen=True, slots=True)
class Tree:
    """A checkout and the environment its edge and worker get on top of the bench's."""

    path: Path
    env: dict[str, str]

    @classmethod
    def parse(cls, spec: str) -> Tree:
        path, *pairs = spec.split("+")
        env = dict(p.split("=", 1) for p in pairs if "=" in p)
        if len(env) != len(pairs):
            raise ValueError(f"--tree {spec}: PATH[+NAME=VALUE...]")
        return cls(Path(path).resolve(), env)

    @property
    def label(self) -> str:
        return str(self.path) + "".join(f"+{k}" for k in self.env)


def run_level(tree: Tree, prof: Profile, sessions: int, a: argparse.Namespace,
              logs: Path, rate: float = 0.0) -> dict[str, Any]:
    stack = Stack(tree.path, prof.word_delay, sessions, logs, tree.env, a.edges, a.workers)
    try:
        run = asyncio.run(drive(stack, prof, sessions, a, rate))
        fig = figures(run, prof, stack.r, a.log_sample)
        fig["tracebacks"] = stack.tracebacks()
        return fig
    finally:
        stack.r.close()
        stack.r_bare.close()
        stack.stop()


# ------------------------------------------------------------------ summary and entry


KEYS = ("redis_cmds_per_text_frame", "redis_cmds_per_turn", "redis_cpu_ms_per_turn",
        "redis_cpu_ms_per_turn_total", "redis_cpu_ms_per_turn_over_bare",
        "redis_bare_cpu_ms_per_turn", "redis_stack_idle_ms_per_turn",
        "redis_reads_per_turn", "redis_writes_per_turn", "redis_connections_per_turn",
        "redis_cmd_usec_per_turn", "redis_script_usec_per_turn", "redis_cpu_ms_per_300_words",
        "edge_cpu_ms_per_turn", "worker_cpu_ms_per_turn", "loadgen_cpu_ms_per_turn",
        "turns_per_s", "ack_p50_ms", "ack_p99_ms", "turn_p50_ms", "turn_p99_ms",
        "turn_p50_over_stream", "text_frames_per_turn", "reply_words_per_turn")


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per checkout, profile and sessions: the mean over rounds of each figure, with its
    spread."""
    out = []
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return r["tree"], r["profile"], r["sessions"], r.get("rate")

    for tree, name, n, rate in dict.fromkeys(key(r) for r in runs):
        rs = [r for r in runs if key(r) == (tree, name, n, rate)]
        row: dict[str, Any] = {"tree": tree, "commit": rs[0]["commit"], "profile": name,
                               "sessions": n, "rate": rate, "rounds": len(rs),
                               "lost": sum(r["lost"] for r in rs)}
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
    return (f"{f['tree'].rsplit('/', 1)[-1]:>14} {f['commit'][:8]} r{f['round']} {f['profile']:>5} "
            f"x{f['sessions']:<4} rate {f['rate']} turns {f['ended']:>5} ({f['turns_per_s']}/s) "
            f"lost {f['lost']} (sent {f['sent']} acked {f['acked']} errors {f['errors']}) | "
            f"cmds/frame {f['redis_cmds_per_text_frame']} cmds/turn {f['redis_cmds_per_turn']} | "
            f"CPU-ms/turn redis {f['redis_cpu_ms_per_turn']} (total "
            f"{f['redis_cpu_ms_per_turn_total']}, bare idle {f['redis_bare_cpu_ms_per_turn']}, "
            f"stack idle {f['redis_stack_idle_ms_per_turn']}) edge {f['edge_cpu_ms_per_turn']} "
            f"worker {f['worker_cpu_ms_per_turn']} loadgen {f.get('loadgen_cpu_ms_per_turn')} "
            f"| redis reads/turn "
            f"{f.get('redis_reads_per_turn')} writes {f.get('redis_writes_per_turn')} "
            f"conns {f.get('redis_connections_per_turn')} "
            f"cmd-µs {f['redis_cmd_usec_per_turn']} (scripts apart "
            f"{f.get('redis_script_usec_per_turn')}) | log {f['log']['ratio_to_reply']}x reply | "
            f"ack p99 {f['ack_p99_ms']} turn p50 {f['turn_p50_over_stream']}x stream "
            f"| machine idle {f['machine_idle_share']}")


def run_all(a: argparse.Namespace) -> list[dict[str, Any]]:
    profs = profiles(a)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-turnpath-") as tmp:
        for rnd in range(a.rounds):
            for tree in a.tree if rnd % 2 == 0 else a.tree[::-1]:
                for name, n, rate in itertools.product(a.profiles, a.sessions, a.rate):
                    logs = Path(tmp) / f"{rnd}-{len(runs)}-{tree.path.name}-{name}-{n}"
                    fig = {"tree": tree.label, "env": tree.env,
                           "commit": tree_commit(tree.path), "round": rnd,
                           "sessions": n, "rate": rate or None, "seconds": a.seconds,
                           "edges": a.edges, "workers": a.workers,
                           **run_level(tree, profs[name], n, a, logs, rate)}
                    runs.append(fig)
                    if a.keep_logs:  # the edge's and workers' logs, for reading after the run
                        shutil.copytree(logs, Path(a.keep_logs) / logs.name, dirs_exist_ok=True,
                                        ignore=shutil.ignore_patterns("*.aof", "*.rdb",
                                                                      "appendonlydir"))
                    print(_line(fig), file=sys.stderr, flush=True)
                    print("    command µs per turn:", fig["redis_cmd_usec_per_turn_by_name"],
                          "\n    commands per turn:", fig["redis_cmds_per_turn_by_name"],
                          file=sys.stderr, flush=True)
    return runs


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", type=Tree.parse, action="append", default=[],
                   help="a checkout whose edge and worker to run, PATH[+NAME=VALUE...] "
                        "(repeatable; default: this one)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--profiles", default="long,short", help="comma-separated: long, short")
    p.add_argument("--sessions", type=int, action="append", default=[],
                   help="client sessions, 1 reader each (repeatable: one run per value; "
                        "default 200)")
    p.add_argument("--rate", type=float, action="append", default=[],
                   help="total turns/s over the sessions (default 0: each in a closed loop); "
                        "repeatable: one run per rate, and the highest sustained one "
                        "(loadtest/turnpath/throughput.py) in the summary")
    p.add_argument("--edges", type=int, default=1, help="edge processes (one port each)")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--seconds", type=float, default=20.0,
                   help="sending time of each run (at most 120: at 40 sessions, 60 s gives "
                        "~400 long turns, ~1 s of Redis CPU to tell trees apart)")
    p.add_argument("--idle", type=float, default=5.0, help="idle baseline, seconds")
    p.add_argument("--grace", type=float, default=10.0,
                   help="after sending, seconds for acked turns to end (then: lost)")
    p.add_argument("--long-words", type=int, default=300)
    p.add_argument("--long-word-delay", type=float, default=0.02)
    p.add_argument("--short-word-delay", type=float, default=0.03)
    p.add_argument("--keep-logs", help="copy each run's edge and worker logs under this dir")
    p.add_argument("--log-sample", type=int, default=20, help="sessions whose log is read")
    p.add_argument("--record", nargs="?", const="turnpath", metavar="NAME",
                   help="write loadtest/results/<NAME>.json (default name: turnpath)")
    p.add_argument("--notes", default="")
    return p


def main() -> None:
    p = parser()
    a = p.parse_args()
    a.profiles = a.profiles.split(",")
    a.sessions = a.sessions or [200]
    a.rate = a.rate or [0.0]
    if not set(a.profiles) <= {"long", "short"}:
        p.error("--profiles: long and/or short")
    if not (all(1 <= n <= 2000 for n in a.sessions) and 0 < a.seconds <= 120
            and 0 < a.grace <= 30 and 0 < a.idle <= 30 and min(a.rate) >= 0
            and 1 <= a.edges <= 4 and 1 <= a.workers <= 8):
        p.error("--sessions 1-2000, --seconds 0-120, --grace 0-30, --idle 0-30, "
                "--edges 1-4, --workers 1-8")
    a.tree = a.tree or [Tree(ROOT, {})]
    runs = run_all(a)
    figs = {"runs": runs, "summary": summary(runs), "sessions": a.sessions,
            "rate": [r for r in a.rate if r] or None, "seconds": a.seconds, "idle_s": a.idle,
            "edges": a.edges, "workers": a.workers, "throughput": best(runs)}
    print(orjson.dumps(figs["summary"], option=orjson.OPT_INDENT_2).decode())
    if figs["throughput"]:
        print(orjson.dumps(figs["throughput"], option=orjson.OPT_INDENT_2).decode())
    if a.record is not None:
        print(f"recorded {record(a.record, figs, notes=a.notes)}", file=sys.stderr)


if __name__ == "__main__":
    main()
