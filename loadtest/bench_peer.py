"""Agentia beside Centrifugo: the same storm/hold/fan-out scenario against each, in one run.

For each server in turn (``--servers``; default: Agentia's edge with picows, with websockets,
then Centrifugo without and with history), on the same machine with the same client
(:mod:`loadtest.peer`):

1. start the server alone (Agentia: one edge process and a private redis-server;
   Centrifugo: one process, memory engine, ``GOMAXPROCS=1`` by default);
2. **storm**: ``--clients`` processes open ``--connections`` authenticated connections in all
   (Agentia: JWT in ``Authorization``, ``welcome``; Centrifugo: ``connect`` with a JWT, then
   ``subscribe`` to the connection's own channel), ``--inflight`` handshakes at a time per
   process: handshake latency, server CPU-seconds per 1,000 handshakes;
3. **hold**: ``--hold`` seconds of keepalives every ``--heartbeat`` seconds (Agentia: client
   pings; Centrifugo: server pings, client pongs): server RSS per connection at the end of the
   hold (less the RSS before the storm), CPU per 1,000 keepalives, drops;
4. **fan-out**: ``--rate`` events a second for ``--seconds``, each to the next connection
   (round robin) — Agentia: into the edge's delivery stream (what a worker's append writes);
   Centrifugo: ``/api/broadcast``, ``--batch`` channels a call: events delivered, server
   CPU-seconds per 1,000 delivered, hence frames per second per server core.

Server CPU and RSS come from ``/proc/<pid>/stat`` and ``/proc/<pid>/status`` (all threads).
Agentia's redis-server is measured separately and reported beside the edge. Everything runs on
loopback, is bounded in count and time, and every process is stopped by PID.

    python -m loadtest.bench_peer --connections 10000 --record

With ``--record`` the figures go to ``loadtest/results/peer-centrifugo.json``
(``loadtest.record``); see docs/benchmarks-peer.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from loadtest.peer import servers
from loadtest.peer.harness import Clients, Meter, sum_snaps
from loadtest.peer.report import format_one, format_ratios, median_of, ratios
from loadtest.peer.servers import KINDS, Running
from loadtest.proc_stats import pct
from loadtest.record import record

DEFAULT_SERVERS = ",".join(KINDS)


# ------------------------------------------------------------------ one server


def bench_server(run: Running, args: argparse.Namespace) -> dict[str, Any]:
    time.sleep(1.0)
    meter = Meter(run)
    rss0 = meter.rss()
    go0 = servers.go_stats(run) if run.kind.startswith("centrifugo") else {}
    meter.lap()
    clients = Clients(run, args)
    try:
        fig = _phases(run, args, meter, rss0, clients)
        if go0:
            fig["go_runtime_per_conn"] = _go_per(go0, fig.pop("go_after_hold"),
                                                 fig["connections"])
        return fig
    finally:
        clients.stop()


def _go_per(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    """Goroutines per connection, and KiB per connection of Go's heap in use, heap of live
    objects (plus garbage not yet collected), stacks; GCs during the storm and hold."""
    out: dict[str, float] = {}
    for k, v in after.items():
        d = v - before.get(k, 0.0)
        short = k.removeprefix("go_memstats_").removeprefix("go_")
        if k.endswith("_bytes"):
            out[short.removesuffix("_bytes") + "_kib"] = round(d / 1024 / n, 2)
        elif k == "go_goroutines":
            out[short] = round(d / n, 2)
        else:
            out[short] = d
    return out


def _phases(run: Running, args: argparse.Namespace, meter: Meter, rss0: dict[str, int],
            clients: Clients) -> dict[str, Any]:
    t0 = time.perf_counter()
    opened = clients.gather("open", 600)
    storm_cpu = meter.lap()
    wall = time.perf_counter() - t0
    lat = [x for m in opened for x in m[1]]
    snap0 = sum_snaps([m[3] for m in opened])
    n = len(lat)
    if n == 0:
        raise RuntimeError(f"{run.kind}: no connection opened: {snap0['errors']}")
    rss_open = meter.rss()
    fig: dict[str, Any] = {
        "connections": n, "failed": args.connections - n, "errors": snap0["errors"],
        "open_wall_s": round(wall, 2), "handshakes_per_s": round(n / wall),
        "handshake_p50_ms": round(pct(lat, 50) * 1000, 1),
        "handshake_p99_ms": round(pct(lat, 99) * 1000, 1),
        "cpu_s_per_1000_handshakes": _per(storm_cpu, n, 1000),
        "rss_kib_per_conn_after_storm": _rss_per(rss_open, rss0, n),
    }
    fig.update(_hold(run, args, meter, rss0, clients, n))
    fig.update(_fanout(run, args, meter, clients, n, fig["hold_cpu_pct"]))
    fig["extra"] = {k: v for k, v in run.extra.items() if k in ("gomaxprocs", "node")}
    return fig


def _hold(run: Running, args: argparse.Namespace, meter: Meter, rss0: dict[str, int],
          clients: Clients, n: int) -> dict[str, Any]:
    time.sleep(2.0)  # let the storm's tail (writes, GC) settle before the hold window
    before = clients.snap()
    meter.lap()
    time.sleep(args.hold)
    cpu = meter.lap()
    after = clients.snap()
    rss = meter.rss()
    kept = after["keepalives"] - before["keepalives"]
    extra: dict[str, Any] = {}
    if run.kind.startswith("centrifugo"):
        extra["go_after_hold"] = servers.go_stats(run)
        servers.force_gc(run)
        extra["rss_kib_per_conn_after_forced_gc"] = _rss_per(meter.rss(), rss0, n)
        meter.lap()  # the forced collections are not the fan-out's
    return {**extra,"hold_s": args.hold, "keepalives": kept, "dropped_in_hold": after["dropped"],
            "cpu_s_per_1000_keepalives": _per(cpu, kept, 1000),
            "hold_cpu_pct": {k: round(100 * v / args.hold, 1) for k, v in cpu.items()},
            "rss_kib_per_conn": _rss_per(rss, rss0, n),
            "rss_mib": {k: round(v / 1024, 1) for k, v in rss.items()}}


def _fanout(run: Running, args: argparse.Namespace, meter: Meter, clients: Clients,
            n: int, idle_pct: dict[str, float]) -> dict[str, Any]:
    """``..._net``: less what each process burned idle during the hold (keepalives, timers)
    for as long as the fan-out lasted: the marginal cost of a frame."""
    if args.seconds <= 0:
        return {}
    feed: Callable[..., Any] = servers.feed_centrifugo
    if run.kind.startswith("agentia"):
        feed = AGENTIA_FEEDS[args.agentia_feed]
        if args.agentia_feed == "chunk":
            _start_turns(run, clients, n)
    before = clients.snap()
    meter.lap()
    t0, feeder0 = time.perf_counter(), time.process_time()
    lanes: dict[str, int] = {"lanes": args.lanes} if run.kind.startswith("centrifugo") else {}
    if feed is servers.feed_agentia_chunk:
        lanes["run_of"] = args.chunk_run
    published = asyncio.run(feed(run, n, args.rate, args.seconds, args.batch, **lanes))
    feed_wall = time.perf_counter() - t0
    feeder_cpu = time.process_time() - feeder0
    got, last_change, prev = 0, time.monotonic(), -1
    while time.monotonic() - last_change < 2.0 and got < published:
        time.sleep(0.25)  # wait for the tail: until all arrived or nothing moves for 2 s
        got = clients.snap()["events"] - before["events"]
        if got != prev:
            prev, last_change = got, time.monotonic()
    wall = time.perf_counter() - t0
    cpu = meter.lap()
    after = clients.snap()
    got = after["events"] - before["events"]
    frames = max(got, 1)
    net = {k: v - idle_pct.get(k, 0.0) / 100 * wall for k, v in cpu.items()}
    return {"offered_per_s": args.rate, "published": published,
            "published_per_s": round(published / feed_wall), "delivered": got,
            "delivered_per_s": round(got / wall), "fanout_wall_s": round(wall, 2),
            "cpu_s_per_1000_frames": _per(cpu, frames, 1000),
            "frames_per_core_s": {k: round(frames / v) if v > 0 else None
                                  for k, v in cpu.items()},
            "frames_per_core_s_all": round(frames / sum(cpu.values())),
            "cpu_s_per_1000_frames_net": _per(net, frames, 1000),
            "frames_per_core_s_net": {k: round(frames / v) if v > 0 else None
                                      for k, v in net.items()},
            "dropped_after_fanout": after["dropped"],
            "feeder_cpu_s_per_1000": round(feeder_cpu / max(published, 1) * 1000, 4)}


AGENTIA_FEEDS: dict[str, Callable[..., Any]] = {
    "delivery": servers.feed_agentia, "append": servers.feed_agentia_append,
    "chunk": servers.feed_agentia_chunk}


def _start_turns(run: Running, clients: Clients, n: int) -> None:
    """Start a turn in every session (not measured) and wait for its ``turn_start`` frames
    (at most 60 s), so that the fan-out window counts only chunks."""
    before = clients.snap()["events"]
    asyncio.run(servers.start_turns(run, n))
    deadline = time.monotonic() + 60
    while clients.snap()["events"] - before < n and time.monotonic() < deadline:
        time.sleep(0.25)


def _per(cpu: dict[str, float], count: int, unit: int) -> dict[str, float]:
    return {k: round(v / max(count, 1) * unit, 4) for k, v in cpu.items()}


def _rss_per(rss: dict[str, int], rss0: dict[str, int], n: int) -> dict[str, float]:
    return {k: round((rss[k] - rss0[k]) / n, 2) for k in rss}


# ------------------------------------------------------------------ the comparison


def start(kind: str, args: argparse.Namespace, binary: str | None) -> Running:
    if kind.startswith("agentia"):
        return servers.start_agentia(kind.split("-", 1)[1], args.heartbeat, args.connections)
    assert binary is not None
    return servers.start_centrifugo(binary, kind == "centrifugo-history", args.heartbeat,
                                    args.gomaxprocs)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    binary, skipped = None, []
    if any(k.startswith("centrifugo") for k in kinds):
        binary = servers.find_centrifugo(args.centrifugo)
        if binary is None and args.build:
            print(f"building Centrifugo: go install {servers.CENTRIFUGO_MODULE}", flush=True)
            binary, why = servers.build_centrifugo()
            if binary is None:
                print(why, file=sys.stderr)
        if binary is None:
            print("SKIP centrifugo: no binary (build it with `go install "
                  f"{servers.CENTRIFUGO_MODULE}`, or pass --centrifugo PATH)", flush=True)
            skipped = [k for k in kinds if k.startswith("centrifugo")]
            kinds = [k for k in kinds if not k.startswith("centrifugo")]
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for rep in range(args.repeat):
        for kind in kinds:
            print(f"== {kind} (run {rep + 1}/{args.repeat})", flush=True)
            run = start(kind, args, binary)
            try:
                fig = bench_server(run, args)
            finally:
                run.stop()
            runs[kind].append(fig)
            print(format_one(kind, fig), flush=True)
    results = {k: median_of(v) for k, v in runs.items() if v}
    rat = ratios(results)
    print(format_ratios(rat))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps({"servers": results, "ratios": rat,
                                                  "skipped": skipped}))
    if args.record and not rat:
        print("not recorded: no Agentia/Centrifugo pair ran (a recorded comparison is kept)")
    elif args.record:
        figures = {"servers": results, "ratios": rat, "runs": runs,
                   "params": {k: getattr(args, k) for k in (
                       "connections", "clients", "inflight", "hold", "heartbeat", "rate",
                       "seconds", "batch", "lanes", "agentia_feed", "chunk_run", "repeat",
                       "gomaxprocs")},
                   "centrifugo": {"module": servers.CENTRIFUGO_MODULE, "binary": binary}}
        path = record(args.record_as, figures, notes=args.notes)
        print(f"recorded {path}")
    return 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m loadtest.bench_peer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default=DEFAULT_SERVERS,
                    help=f"comma-separated, in order, from {', '.join(KINDS)}")
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=2,
                    help="client processes (each holds connections/clients sockets; "
                         "keep that under ~15,000)")
    ap.add_argument("--inflight", type=int, default=100,
                    help="handshakes in flight per client process")
    ap.add_argument("--hold", type=float, default=30.0, help="seconds to hold, idle")
    ap.add_argument("--heartbeat", type=float, default=10.0,
                    help="keepalive period, s (Agentia client pings; Centrifugo ping_interval)")
    ap.add_argument("--rate", type=float, default=20_000.0, help="fan-out: events offered/s")
    ap.add_argument("--seconds", type=float, default=10.0, help="fan-out: seconds (0: skip)")
    ap.add_argument("--batch", type=int, default=200,
                    help="fan-out: events per Redis pipeline / channels per broadcast call")
    ap.add_argument("--lanes", type=int, default=4,
                    help="fan-out: Centrifugo broadcast calls in flight at once")
    ap.add_argument("--agentia-feed", choices=list(AGENTIA_FEEDS), default="delivery",
                    help="fan-out into Agentia: straight into the edge's delivery stream; "
                         "through Bus.append (a log event: session log + fan-out); or "
                         "Bus.stream_chunk (a reply piece: partial buffer + fan-out, in a turn "
                         "started with Bus.append(turn_start, run=...)), a worker's real paths")
    ap.add_argument("--chunk-run", type=int, default=25,
                    help="--agentia-feed chunk: chunks to one session in a row, as a reply "
                         "streams (25: a second of reply at the worker's 40 ms coalescing)")
    ap.add_argument("--repeat", type=int, default=1, help="run every server this many times")
    ap.add_argument("--gomaxprocs", type=int, default=1,
                    help="Centrifugo's GOMAXPROCS (0: Go's default, every core)")
    ap.add_argument("--centrifugo", default=None, help="path of the centrifugo binary")
    ap.add_argument("--build", action=argparse.BooleanOptionalAction, default=True,
                    help="go install Centrifugo when no binary is found")
    ap.add_argument("--record", action="store_true", help="write loadtest/results/<name>.json")
    ap.add_argument("--record-as", default="peer-centrifugo")
    ap.add_argument("--notes", default="")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args(argv)
    if args.connections / args.clients > 15_000:
        ap.error("more than 15,000 connections per client process: raise --clients")
    bad = [k for k in args.servers.split(",") if k.strip() and k.strip() not in KINDS]
    if bad:
        ap.error(f"unknown servers {bad}; known: {', '.join(KINDS)}")
    return args


if __name__ == "__main__":
    sys.exit(main())
