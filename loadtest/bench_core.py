"""Core benchmarks of one machine (not Locust; the Locust suite is the scale issue's):

* ``idle``: open N authenticated idle connections to one edge process, measure the edge's
  RSS per connection, CPU-seconds per 1,000 handshakes and handshake latency, hold them with
  heartbeats and count drops.
* ``turns``: a steady rate of chat turns through edge -> Redis -> worker -> edge with the demo
  model at zero delay; ack and full-turn latency percentiles.
* ``cancel``: how long from a client's ``cancel`` to the ``cancelled`` event of a running turn.

Everything runs on loopback, bounded in count and time, and is stopped by PID.

    python -m loadtest.bench_core idle --connections 15000
    python -m loadtest.bench_core turns --rate 100 --seconds 20
    python -m loadtest.bench_core cancel --trials 30

With ``--record`` a run also writes its figures to ``loadtest/results/<name>.json``
(``loadtest.record``), which ``agentia capacity`` reads. Names, and the figures the capacity
model takes from them:

* ``core-idle`` (``idle``; ``core-idle-deflate`` with ``--deflate``):
  ``edge_rss_kib_per_conn``, ``kernel_slab_kib_per_conn_both_ends``, ``edge_cpu_s_per_1000``
  (handshakes), ``edge_cpu_s_per_1000_pings`` (heartbeats of held connections, measured over
  the hold, which must last at least two heartbeats).
* ``core-turns-w<workers>`` (``turns``): per offered rate, CPU-seconds per turn of the edge, of
  the workers and of redis-server (from the first turn sent to the last reply, less what each
  process burns idle, measured for 5 s before), and ``summary``: the same averaged over the
  levels the workers kept up with (every turn answered, first-delta p50 under 1 s: on a shared
  machine the p99 is other people's load), and the highest such rate. With the demo model at
  zero delay a reply is one delta.
* ``core-turns-w<workers>-streamed`` (``turns --word-delay 0.05 --words 100``): the same with
  replies streamed word by word, about one delta per word; and ``...-streamed-fast``
  (``--word-delay 0.01 --record core-turns-w1-streamed-fast``): the same words, several per
  delta. The three runs separate what one more streamed word (a model stream event) and one
  more delta (an append to the log, a frame to the client) cost the edge and the worker.
* ``core-cancel`` (``cancel``): cancel latency (documentation only).

``--record NAME`` overrides the name. The machine these ran on is shared: say so with
``--notes``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import websockets

from agentia import supervise
from agentia.settings import DEV_SECRET
from agentia.supervise import stop_all
from gateway.auth import mint
from launch.redis_server import RedisServer
from loadtest.record import record

NO_USER_LIMITS = {"AGENTIA_MAX_CONNECTIONS_PER_USER_TOTAL": "0",
                  "AGENTIA_MAX_SESSIONS_PER_HOUR": "0", "AGENTIA_MAX_SESSIONS_PER_USER": "0"}
"""A benchmark's few users hold many connections and sessions: the per-user limits over the
deployment (sessions/opening.py) are off, as the per-process one is raised."""

IP_BIND_ADDRESS_NO_PORT = 24
ROOT = Path(__file__).resolve().parent.parent


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def slab_kib() -> int:
    """Kernel slab memory, machine-wide (sockets, their buffers, epoll entries...)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Slab:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def spawn(args: list[str], env: dict[str, str], ready: str | tuple[str, ...],
          tree: Path = ROOT) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """``agentia <args>`` of the checkout ``tree`` (its directory first on the path): the
    command module is ``launch.cli``, or ``agentia.cli`` in checkouts older than issue 12."""
    if tree == ROOT:
        return supervise.spawn(args, env, ready, 120, cwd=ROOT, stderr=subprocess.DEVNULL)
    module = "launch.cli" if (tree / "launch" / "cli.py").exists() else "agentia.cli"
    return supervise.start([sys.executable, "-m", module, *args],
                           {**env, "PYTHONPATH": str(tree)}, ready, 120, cwd=tree,
                           stderr=subprocess.DEVNULL, what=f"the edge of {tree}")


# ------------------------------------------------------------------ idle connections


async def _open_many(port: int, n: int, source: str, token: str | Callable[[str], str],
                     lat: list[float],
                     conns: list[Any], deflate: bool) -> None:
    sem = asyncio.Semaphore(200)

    async def one(i: int) -> None:
        async with sem:
            s = socket.socket()
            s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((source, 0))
            s.setblocking(False)
            t0 = time.perf_counter()
            await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port))
            bearer = token(f"{source}-{i}") if callable(token) else token
            ws = await websockets.connect(
                f"ws://127.0.0.1:{port}/v1/ws?session=idle-{source}-{i}", sock=s,
                additional_headers={"Authorization": f"Bearer {bearer}"},
                compression="deflate" if deflate else None, ping_interval=None, max_queue=4)
            await ws.recv()  # welcome
            lat.append(time.perf_counter() - t0)
            conns.append(ws)

    await asyncio.gather(*(one(i) for i in range(n)))


def _client_proc(port: int, n: int, sources: list[str], hold_s: float, heartbeat_s: float,
                 q: Any, deflate: bool, user_per_conn: bool = False) -> None:
    async def main() -> None:
        token: str | Callable[[str], str] = mint(DEV_SECRET, f"bench-{os.getpid()}", 3600)
        if user_per_conn:  # as in production: each connection a user of its own
            token = lambda tag: mint(DEV_SECRET, f"bench-{os.getpid()}-{tag}", 3600)  # noqa: E731
        lat: list[float] = []
        conns: list[Any] = []
        per = n // len(sources)
        await asyncio.gather(*(_open_many(port, per, s, token, lat, conns, deflate)
                               for s in sources))
        q.put(("open", lat))
        end, dropped = time.monotonic() + hold_s, 0
        while time.monotonic() < end:
            await asyncio.sleep(min(heartbeat_s, max(0.1, end - time.monotonic())))
            alive = []
            for ws in conns:
                try:
                    await ws.send('{"type":"ping"}')
                    alive.append(ws)
                except Exception:
                    dropped += 1
            conns = alive
        q.put(("held", dropped, len(conns)))
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)

    asyncio.run(main())


def _get(q: Any, procs: list[mp.Process], timeout: float) -> Any:
    """A result from the client processes, failing fast if one of them died."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            return q.get(timeout=1)
        except Exception:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError("a client process failed; see its traceback") from None
    raise TimeoutError("client processes did not report in time")


def bench_idle(connections: int, clients: int, hold_s: float,
               deflate: bool = False, heartbeat: float = 20.0, tree: Path = ROOT,
               user_per_conn: bool = False) -> dict[str, Any]:
    """``user_per_conn``: every connection is a user of its own and the per-user limits keep
    their defaults (what production pays: a lease and a new-session count per handshake);
    otherwise each client process is one user and those limits are off."""
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp), appendonly=False).start()
        env = {**os.environ, "AGENTIA_DEV": "true",  # local: the public dev secret
               "AGENTIA_REDIS_URL": redis.url, "AGENTIA_LOG_LEVEL": "warning",
               "AGENTIA_COMPRESSION": "true" if deflate else "false"}
        if not user_per_conn:
            env.update(NO_USER_LIMITS, AGENTIA_MAX_CONNECTIONS_PER_USER=str(connections))
        edge, info = spawn(["gateway", "--port", "0"], env, "AGENTIA_EDGE_READY", tree)
        try:
            time.sleep(1)
            rss0, cpu0, k0 = rss_kib(edge.pid), cpu_s(edge.pid), slab_kib()
            q: Any = mp.Queue()
            per = connections // clients
            procs = [mp.Process(target=_client_proc, args=(
                int(info["port"]), per, [f"127.0.0.{2 + (c * 4 + j) % 250}" for j in range(4)],
                hold_s, heartbeat, q, deflate, user_per_conn)) for c in range(clients)]
            t0 = time.perf_counter()
            for p in procs:
                p.start()
            lat: list[float] = []
            for _ in procs:
                lat += _get(q, procs, 600)[1]
            wall = time.perf_counter() - t0
            cpu1, rss1, k1 = cpu_s(edge.pid), rss_kib(edge.pid), slab_kib()
            # heartbeats: each client pings every `heartbeat` s from the end of its own ramp
            # (and once more at the end of the hold); the window ends half a heartbeat after
            # the last full round, so that neither the final pings nor the closes count
            rounds = max(0, int((hold_s - heartbeat) // heartbeat))
            time.sleep((rounds + 0.5) * heartbeat if rounds else 0)
            cpu2 = cpu_s(edge.pid)
            held = [_get(q, procs, hold_s + 600) for _ in procs]
            for p in procs:
                p.join(60)
            n = len(lat)
            return {
                "connections": n, "open_wall_s": round(wall, 2),
                "handshakes_per_s": round(n / wall), "edge_cpu_s_per_1000": round(
                    (cpu1 - cpu0) / n * 1000, 3),
                "handshake_p50_ms": round(pct(lat, 50) * 1000, 1),
                "handshake_p99_ms": round(pct(lat, 99) * 1000, 1),
                "edge_rss_kib_per_conn": round((rss1 - rss0) / n, 2),
                "kernel_slab_kib_per_conn_both_ends": round((k1 - k0) / n, 2),
                "hold_s": hold_s, "dropped": sum(h[1] for h in held), "deflate": deflate,
                "heartbeat_s": heartbeat, "pings_measured": rounds * n,
                "edge_cpu_s_per_1000_pings": round((cpu2 - cpu1) / (rounds * n) * 1000, 4)
                if rounds else None,
            }
        finally:
            stop_all([edge])
            redis.stop()


# ------------------------------------------------------------------ turns


async def _turn_load(port: int, rate: float, seconds: float, clients: int,
                     words: int = 1, probe: Any = None) -> dict[str, Any]:
    """``probe()`` (CPU-seconds by process group) is read once the connections are open and
    again once every reply is in, so that handshakes and closes are not charged to turns."""
    token = mint(DEV_SECRET, "bench-turns", 3600)
    acks: list[float] = []
    firsts: list[float] = []
    fulls: list[float] = []
    conns = []
    for i in range(clients):
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/v1/ws?session=turns-{i}",
                                      additional_headers={"Authorization": f"Bearer {token}"},
                                      compression=None, ping_interval=None)
        await ws.recv()
        conns.append(ws)
    sent: dict[str, float] = {}
    turn_of: dict[int, str] = {}
    first_seen: set[str] = set()
    done = 0
    deltas, said = [0], [0]
    total: list[int] = []  # set once sending is over
    all_done = asyncio.Event()

    async def reader(ws: Any) -> None:
        nonlocal done
        async for raw in ws:
            f = orjson.loads(raw)
            now = time.perf_counter()
            if f["type"] == "ack":
                acks.append(now - sent[f["id"]])
                turn_of[id(ws) * 1_000_000 + f["offset"]] = f["id"]
            elif f["type"] in ("chunk", "reply"):
                cid = turn_of.get(id(ws) * 1_000_000 + f["turn"])
                deltas[0] += f["type"] == "chunk"  # reply text frames (the log's deltas before)
                if cid and cid not in first_seen:
                    first_seen.add(cid)
                    firsts.append(now - sent[cid])
                if cid and f["type"] == "reply":
                    fulls.append(now - sent[cid])
                    said[0] += len(f["text"].split())
                    done += 1
                    if total and done >= total[0]:
                        all_done.set()

    readers = [asyncio.create_task(reader(ws)) for ws in conns]
    cpu0 = probe() if probe else {}
    interval, n, t0 = 1.0 / rate, 0, time.perf_counter()
    run = os.urandom(4).hex()  # client ids must be new in every run, or they are duplicates
    text = " ".join(["hello"] * words)  # the demo model's reply quotes it: longer replies
    while time.perf_counter() - t0 < seconds:
        target = t0 + n * interval
        await asyncio.sleep(max(0.0, target - time.perf_counter()))
        cid = f"{run}-{n}"
        sent[cid] = time.perf_counter()
        await conns[n % clients].send(orjson.dumps({"type": "send", "id": cid,
                                                   "text": text}).decode())
        n += 1
    total.append(n)
    if done >= n:
        all_done.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_done.wait(), 30)
    window = time.perf_counter() - t0
    cpu1 = probe() if probe else {}
    for r in readers:
        r.cancel()
    for ws in conns:
        await ws.close()
    ms = 1000
    return {"rate": rate, "sent": n, "completed": done, "achieved_rate": round(
        n / seconds, 1),
        "ack_p50_ms": round(pct(acks, 50) * ms, 2), "ack_p99_ms": round(pct(acks, 99) * ms, 2),
        "first_delta_p50_ms": round(pct(firsts, 50) * ms, 2),
        "first_delta_p99_ms": round(pct(firsts, 99) * ms, 2),
        "full_turn_p50_ms": round(pct(fulls, 50) * ms, 2),
        "full_turn_p99_ms": round(pct(fulls, 99) * ms, 2),
        "full_turn_mean_ms": round(statistics.fmean(fulls) * ms, 2) if fulls else None,
        "deltas_per_turn": round(deltas[0] / done, 2) if done else None,
        "reply_words_per_turn": round(said[0] / done, 2) if done else None,
        "window_s": round(window, 2), "_cpu": {k: cpu1[k] - cpu0[k] for k in cpu0}}


def bench_turns(rates: list[float], seconds: float, clients: int, workers: int,
                word_delay: float = 0.0, words: int = 1) -> list[Any]:
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp), appendonly=True).start()
        env = {**os.environ, "AGENTIA_DEV": "true",  # local: the public dev secret
               "AGENTIA_REDIS_URL": redis.url, "AGENTIA_LOG_LEVEL": "warning",
               "AGENTIA_DEMO_WORD_DELAY": str(word_delay), "AGENTIA_RATE_PER_S": "1000",
               "AGENTIA_BURST": "1000", "AGENTIA_CONCURRENCY": "256",
               "AGENTIA_MAX_CONNECTIONS_PER_USER": str(clients),
               **NO_USER_LIMITS}
        env.pop("OPENAI_API_KEY", None)
        edge, info = spawn(["gateway", "--port", "0"], env, "AGENTIA_EDGE_READY")
        ws = [spawn(["worker"], env, "AGENTIA_WORKER_READY")[0] for _ in range(workers)]
        assert redis.proc is not None
        pids = {"edge": [edge.pid], "workers": [w.pid for w in ws], "redis": [redis.proc.pid]}
        out = []

        def probe() -> dict[str, float]:
            return {k: sum(cpu_s(p) for p in v) for k, v in pids.items()}

        try:
            # what the processes burn with nothing to do (polling, heartbeats), subtracted
            # from each level so that a slow level is not charged more per turn for idling
            c0 = probe()
            time.sleep(5)
            idle = {k: (v - c0[k]) / 5 for k, v in probe().items()}
            for r in rates:
                level = asyncio.run(_turn_load(int(info["port"]), r, seconds, clients, words,
                                               probe))
                for k, used in level.pop("_cpu").items():
                    net = used - idle[k] * level["window_s"]
                    level[f"{k}_cpu_s_per_turn"] = round(net / max(1, level["completed"]), 5)
                    level[f"{k}_idle_cores"] = round(idle[k], 4)
                out.append(level)
                print(orjson.dumps(out[-1]).decode(), file=sys.stderr, flush=True)
            return out
        finally:
            stop_all([edge, *ws])
            redis.stop()


# ------------------------------------------------------------------ cancel


async def _cancel_trials(port: int, trials: int) -> dict[str, Any]:
    token = mint(DEV_SECRET, "bench-cancel", 3600)
    lat: list[float] = []
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/ws?session=cancel-bench",
                                  additional_headers={"Authorization": f"Bearer {token}"},
                                  compression=None) as ws:
        await ws.recv()
        for n in range(trials):
            await ws.send(orjson.dumps({"type": "send", "id": f"{os.urandom(4).hex()}-{n}",
                                        "text": "a long reply " * 5}).decode())
            turn = None
            while True:
                f = orjson.loads(await ws.recv())
                if f["type"] == "ack":
                    turn = f["offset"]
                elif f["type"] == "chunk" and f["turn"] == turn:
                    t0 = time.perf_counter()
                    await ws.send(orjson.dumps({"type": "cancel", "turn": turn}).decode())
                elif f["type"] == "cancelled" and f["turn"] == turn:
                    lat.append(time.perf_counter() - t0)
                    break
    return {"trials": trials, "cancel_to_cancelled_p50_ms": round(pct(lat, 50) * 1000, 1),
            "p99_ms": round(pct(lat, 99) * 1000, 1), "max_ms": round(max(lat) * 1000, 1)}


def bench_cancel(trials: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp), appendonly=True).start()
        env = {**os.environ, "AGENTIA_DEV": "true",  # local: the public dev secret
               "AGENTIA_REDIS_URL": redis.url, "AGENTIA_LOG_LEVEL": "warning",
               "AGENTIA_DEMO_WORD_DELAY": "0.2", "AGENTIA_RATE_PER_S": "100",
               **NO_USER_LIMITS}
        env.pop("OPENAI_API_KEY", None)
        edge, info = spawn(["gateway", "--port", "0"], env, "AGENTIA_EDGE_READY")
        worker = spawn(["worker"], env, "AGENTIA_WORKER_READY")[0]
        try:
            return asyncio.run(_cancel_trials(int(info["port"]), trials))
        finally:
            stop_all([edge, worker])
            redis.stop()


def turns_summary(levels: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    """CPU per turn averaged over the levels the workers kept up with; the highest such rate.

    The CPU counted for a level includes its ramp-down (waiting for the last replies), so a
    kept-up level's figure is what a turn costs, not what an overloaded system spends."""
    ok = [lv for lv in levels
          if lv["completed"] == lv["sent"] and lv["first_delta_p50_ms"] < 1000]
    out: dict[str, Any] = {"workers": workers, "levels_kept_up": [lv["rate"] for lv in ok],
                           "max_rate_kept_up": max((lv["rate"] for lv in ok), default=None)}
    for k in ("edge", "workers", "redis"):
        vals = [lv[f"{k}_cpu_s_per_turn"] for lv in ok]
        out[f"{k}_cpu_s_per_turn"] = round(statistics.fmean(vals), 5) if vals else None
    for k in ("deltas_per_turn", "reply_words_per_turn"):
        d = [lv[k] for lv in ok if lv.get(k) is not None]
        out[k] = round(statistics.fmean(d), 2) if d else None
    return out


def idle_trees(a: Any) -> list[dict[str, Any]]:
    """``idle`` for each ``--tree``, side by side: round r runs them in order, reversed when
    r is odd, so neither checkout always runs first on a machine that warms up."""
    runs = []
    for r in range(a.rounds):
        for tree in (a.tree if r % 2 == 0 else a.tree[::-1]):
            tree = tree.resolve()
            fig = bench_idle(a.connections, a.clients, a.hold, a.deflate, a.heartbeat, tree,
                             a.user_per_connection)
            commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short=12", "HEAD"],
                                    capture_output=True, text=True, check=False).stdout.strip()
            runs.append({"tree": str(tree), "commit": commit, "round": r,
                         "user_per_connection": a.user_per_connection, **fig})
            print(f"round {r} {tree} {commit}: {fig['edge_rss_kib_per_conn']} KiB/conn, "
                  f"{fig['edge_cpu_s_per_1000']} CPU-s/1k handshakes", file=sys.stderr)
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("idle")
    i.add_argument("--connections", type=int, default=10_000)
    i.add_argument("--clients", type=int, default=2, help="client processes")
    i.add_argument("--hold", type=float, default=60.0, help="seconds to hold them")
    i.add_argument("--deflate", action="store_true",
                   help="clients offer permessage-deflate and the edge accepts it")
    i.add_argument("--heartbeat", type=float, default=20.0, help="seconds between client pings")
    i.add_argument("--tree", type=Path, action="append",
                   help="a checkout whose edge to measure (repeatable: side by side in one run, "
                        "in turn for --rounds rounds, the order reversed every other round)")
    i.add_argument("--rounds", type=int, default=1)
    i.add_argument("--user-per-connection", action="store_true",
                   help="each connection its own user, per-user limits at their defaults")
    t = sub.add_parser("turns")
    t.add_argument("--rate", type=float, action="append", help="turns/s (repeatable)")
    t.add_argument("--seconds", type=float, default=20.0)
    t.add_argument("--clients", type=int, default=200)
    t.add_argument("--workers", type=int, default=1)
    t.add_argument("--word-delay", type=float, default=0.0,
                   help="demo model: seconds between words (>0: streamed replies, many deltas)")
    t.add_argument("--words", type=int, default=1, help="words in each turn (the reply quotes it)")
    c = sub.add_parser("cancel")
    c.add_argument("--trials", type=int, default=30)
    for sp in (i, t, c):
        sp.add_argument("--record", nargs="?", const="", metavar="NAME",
                        help="write loadtest/results/<NAME>.json (default name: see above)")
        sp.add_argument("--notes", default="", help="recorded with --record (e.g. 'noisy')")
    a = p.parse_args()
    if a.cmd == "idle" and a.tree:
        out: Any = idle_trees(a)
        name, figures = "core-idle-trees", {"runs": out}
    elif a.cmd == "idle":
        out = bench_idle(a.connections, a.clients, a.hold, a.deflate, a.heartbeat,
                         user_per_conn=a.user_per_connection)
        name, figures = "core-idle-deflate" if a.deflate else "core-idle", out
    elif a.cmd == "cancel":
        out = bench_cancel(a.trials)
        name, figures = "core-cancel", out
    else:
        out = bench_turns(a.rate or [100.0], a.seconds, a.clients, a.workers, a.word_delay,
                          a.words)
        name = f"core-turns-w{a.workers}" + ("-streamed" if a.word_delay else "")
        figures = {"levels": out, "summary": turns_summary(out, a.workers),
                   "seconds": a.seconds, "clients": a.clients}
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    if a.record is not None:
        path = record(a.record or name, figures, notes=a.notes)
        print(f"recorded {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
