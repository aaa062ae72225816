"""What one Redis shard (one redis-server process, one core) sustains for Agentia's own bus
operations, measured with the real :class:`sessions.bus.Bus` and its Lua scripts; for one
checkout or several side by side (``--tree``, e.g. before and after a change).

Why not ``redis-benchmark``: a turn is not one command. It is the edge's ``SUBMIT`` script, the
fan-out XADD to the delivery stream and the XADD to an inbound shard; the worker's XREADGROUP,
lock, ``BEGIN``, memory read and write, one ``APPEND`` script per log event (``turn_start``,
``reply``) with its fan-out, each reply piece (a chunk: partial buffer and delivery streams,
not the log; before chunks, a ``delta`` event appended to the log like the others), lock
release and XACK; and the edge's heartbeat and XREAD of its delivery stream. The replay
(loadtest/redis_replay.py, run with each checkout's own code) plays exactly that sequence,
from client processes that play edge nodes and workers at once (each its own node id, its own
consumer, its own sessions), with many concurrent closed-loop users per process.

What it reports, for each level (reply pieces per turn, reply size):

* the client processes' own CPU per turn (edge and worker side of the bus calls);
* redis-server CPU-seconds per turn (from ``/proc/<pid>/stat``) and the commands Redis counted
  per turn (``INFO stats``: scripts' inner calls included); hence the turns/s and commands/s
  that would saturate one core: ``1 / cpu_s_per_turn``;
* ``redis_busy``: redis-server's CPU over the wall time. Below ~0.9 the client processes, not
  Redis, were the limit (the per-turn CPU is still Redis's own, measured);
* what a turn keeps in Redis: session log and conversation memory bytes per turn, log events
  per turn, bytes per delivery stream entry (``MEMORY USAGE`` of sample keys);
* and, in a first phase, per idle session (the connection's share: ``OPEN`` script and the
  user's session list): redis-server CPU per session opened and memory per idle session.

Each checkout runs ``--rounds`` times, checkouts alternated and the order reversed every other
round; a level's figure is the median over rounds. A least-squares fit over the levels gives
each per-turn figure as ``base + per_delta * pieces + per_reply_char * chars``. Redis runs with
AOF (``appendfsync everysec``), as documented for production. Bounded in time; each
redis-server is stopped by PID.

    python -m loadtest.bench_redis --tree before=/work/wt/before --tree after=. --rounds 2 \\
        --record --notes "shared machine"

With ``--record`` the checkout labelled ``after`` (or the last one) is recorded as
``redis-shard`` (what ``agentia capacity`` reads), every other one as ``redis-shard-<label>``;
each record's ``commit`` is its own tree's (``bench_commit``: the checkout that ran the bench).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from loadtest.attack.edgeproc import tree_commit
from loadtest.record import ROOT, record

REPLAY = Path(__file__).resolve().parent / "redis_replay.py"
LEVELS = "4:800,16:800,4:3200,150:1200"
"""pieces:reply_chars. 150:1200 is a 300-token reply streamed at 50 tokens/s in 40 ms pieces
(AGENTIA_COALESCE_MS), the capacity model's default turn."""
FITTED = (("redis_cpu_s_per_turn", "redis_cpu_s_per", 9),
          ("client_cpu_s_per_turn", "client_cpu_s_per", 9),
          ("redis_commands_per_turn", "commands_per", 2),
          ("log_bytes_per_turn", "log_bytes_per", 2),
          ("log_events_per_turn", "log_events_per", 2),
          ("memory_bytes_per_turn", "memory_bytes_per", 2),
          ("delivery_bytes_per_turn", "delivery_bytes_per", 2))


def replay(tree: Path, a: argparse.Namespace) -> dict[str, Any]:
    """One run of the replay with ``tree``'s code (its directory first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = [sys.executable, str(REPLAY), "--sessions", str(a.sessions), "--levels", a.levels,
            "--processes", str(a.processes), "--users", str(a.users),
            "--seconds", str(a.seconds)]
    levels = len(a.levels.split(","))
    out = subprocess.run(args, env=env, cwd=tree, stdout=subprocess.PIPE, check=True,
                         timeout=300 + levels * (a.seconds + 300))
    doc: dict[str, Any] = orjson.loads(out.stdout.splitlines()[-1])
    return doc


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One checkout's runs: each level's and the idle phase's figures, median over rounds."""
    def med(rows: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, first in rows[0].items():
            vals = [r[key] for r in rows if isinstance(r.get(key), int | float)]
            out[key] = statistics.median(vals) if vals and not isinstance(first, bool) \
                else first
        return out

    levels = [med([r["levels"][i] for r in runs]) for i in range(len(runs[0]["levels"]))]
    return {"redis_version": runs[0]["redis_version"], "appendonly": runs[0]["appendonly"],
            "reply_path": runs[0]["reply_path"], "rounds": len(runs),
            "idle": med([r["idle"] for r in runs]), "levels": levels, "fit": fit(levels),
            "runs": runs}


def fit(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-turn figures as ``base + per_delta * pieces + per_reply_char * chars``."""
    out: dict[str, Any] = {}
    for key, name, digits in FITTED:
        base, per_delta, per_char = plane(levels, key)
        prefix = name.removesuffix("_per")
        out[f"{key}_base" if "cpu" in name else f"{prefix}_base"] = round(base, digits)
        out[f"{name}_delta"] = round(per_delta, digits)
        out[f"{name}_reply_char"] = round(per_char, digits)
    out["commands_per_turn_base"] = out.pop("commands_base")
    cores = [lv["commands_per_s_per_core"] for lv in levels if lv["commands_per_s_per_core"]]
    out["commands_per_s_per_core"] = round(statistics.fmean(cores)) if cores else None
    return out


def plane(levels: list[dict[str, Any]], key: str) -> tuple[float, float, float]:
    """Least squares of ``key`` on (1, pieces, chars) over the levels; an axis the levels do
    not vary gets a slope of 0."""
    rows = [(1.0, float(lv["deltas_per_turn"]), float(lv["reply_chars"])) for lv in levels]
    ys = [float(lv[key]) for lv in levels]
    used = [0] + [j for j in (1, 2) if len({r[j] for r in rows}) > 1]
    ata = [[sum(r[i] * r[j] for r in rows) for j in used] for i in used]
    aty = [sum(r[i] * y for r, y in zip(rows, ys, strict=True)) for i in used]
    coef = dict(zip(used, solve(ata, aty), strict=True))
    return coef[0], coef.get(1, 0.0), coef.get(2, 0.0)


def solve(m: list[list[float]], v: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (a 3x3 system at most)."""
    n = len(v)
    a = [[*row, v[i]] for i, row in enumerate(m)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(a[r][c]))
        a[c], a[p] = a[p], a[c]
        if a[c][c] == 0:
            raise ValueError("the levels do not determine the fit: vary pieces and size")
        for r in range(n):
            if r != c:
                f = a[r][c] / a[c][c]
                a[r] = [x - f * y for x, y in zip(a[r], a[c], strict=True)]
    return [a[i][n] / a[i][i] for i in range(n)]


def trees(specs: list[str]) -> list[tuple[str, Path]]:
    """``label=path`` (or a bare path, labelled by its directory name)."""
    out = []
    for spec in specs or [str(ROOT)]:
        label, _, path = spec.rpartition("=")
        p = Path(path).resolve()
        out.append((label or p.name, p))
    return out


def bench(a: argparse.Namespace) -> dict[str, dict[str, Any]]:
    ts = trees(a.tree)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in ts}
    for rnd in range(a.rounds):
        for label, path in ts if rnd % 2 == 0 else ts[::-1]:
            print(f"round {rnd + 1}/{a.rounds}: {label} ({path})", file=sys.stderr, flush=True)
            runs[label].append(replay(path, a) | {"round": rnd})
    return {label: {"tree": str(path), "tree_commit": tree_commit(path), **merge(runs[label])}
            for label, path in ts}


def summary(res: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'tree':>10} {'path':>11} {'pieces':>6} {'chars':>6} {'redis ms/turn':>13} "
             f"{'cmds/turn':>9} {'log B/turn':>10} {'busy':>5}"]
    for label, doc in res.items():
        for lv in doc["levels"]:
            lines.append(f"{label:>10} {doc['reply_path']:>11} {lv['deltas_per_turn']:>6} "
                         f"{lv['reply_chars']:>6} {lv['redis_cpu_s_per_turn'] * 1000:>13.3f} "
                         f"{lv['redis_commands_per_turn']:>9.1f} "
                         f"{lv['log_bytes_per_turn']:>10.0f} {lv['redis_busy']:>5.2f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", action="append", default=[], metavar="[LABEL=]PATH",
                   help="a checkout to measure (repeatable; default: this one)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--sessions", type=int, default=20_000, help="idle sessions opened")
    p.add_argument("--levels", default=LEVELS,
                   help="pieces:reply_chars per level, comma-separated")
    p.add_argument("--processes", type=int, default=2, help="client processes")
    p.add_argument("--users", type=int, default=200, help="concurrent users per process")
    p.add_argument("--seconds", type=float, default=8.0, help="per level")
    p.add_argument("--record", nargs="?", const="redis-shard", metavar="NAME")
    p.add_argument("--notes", default="")
    a = p.parse_args()
    res = bench(a)
    print(orjson.dumps(res, option=orjson.OPT_INDENT_2).decode())
    print(summary(res), file=sys.stderr)
    if a.record:
        after = "after" if "after" in res else list(res)[-1]
        for label, doc in res.items():
            name = a.record if label == after else f"{a.record}-{label}"
            others = {k: v["fit"] for k, v in res.items() if k != label}
            path = record(name, doc | {"label": label, "compared_fits": others}, notes=a.notes,
                          measured=doc["tree_commit"])
            print(f"recorded {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
