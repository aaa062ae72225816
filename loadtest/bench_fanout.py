"""Outbound frames per edge core: events written to Redis the way workers write them, fanned
out by the edges to every connection of each session, while many more idle connections are held.

* ``--edges E`` edge processes share one port (``agentia gateway --processes E``);
* ``--idle N`` idle authenticated connections are opened first and held with heartbeats
  (client processes of at most 15,000 sockets each, over several 127.0.0.x source addresses);
* ``--receivers R`` connections over ``--sessions S`` sessions (R/S per session: tabs and
  devices of one conversation, or a broadcast) read every frame;
* a publisher appends ``--rate`` events/s round-robin over the sessions with ``Bus.append``
  (the worker's path: session log, then each holding node's delivery stream) for
  ``--seconds``; each event carries its wall-clock time of entry. ``--feed chunk``: each
  event is a piece of reply text instead, ``Bus.stream_chunk`` (the run's partial buffer,
  then each holding node's delivery stream; not the log) in a turn started before.

Reported: frames delivered per second, edge CPU-seconds (all edge processes, utime+stime from
/proc) per 1,000 frames and so frames/s per edge core, and entry -> client-receive latency
(an upper bound of entry -> socket write: it includes the client's own scheduling). Everything
on loopback, bounded in count and time, stopped by PID.

    python -m loadtest.bench_fanout --edges 6 --idle 90000 --receivers 10000 --sessions 400 \\
        --rate 1500 --seconds 30 --transport picows --record
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import websockets

from agentia.settings import DEV_SECRET
from agentia.supervise import stop_all
from gateway.auth import mint
from launch.redis_server import RedisServer
from loadtest.core_idle import client_result
from loadtest.proc_stats import (
    IP_BIND_ADDRESS_NO_PORT,
    NO_USER_LIMITS,
    cpu_s,
    pct,
    rss_kib,
    spawn,
)
from loadtest.record import record
from sessions import events as E
from sessions.bus import Bus, connect

ROOT = Path(__file__).resolve().parent.parent
PER_PROCESS = 15_000
READERS_PER_PROCESS = 2_500
"""Reading clients are spread thinly: a saturated client would report its own delay."""


async def _connect(port: int, source: str, session: str, token: str) -> Any:
    s = socket.socket()
    s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    s.bind((source, 0))
    s.setblocking(False)
    await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port))
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/v1/ws?session={session}", sock=s,
        additional_headers={"Authorization": f"Bearer {token}"}, compression=None,
        ping_interval=None, max_queue=None, open_timeout=60)
    await ws.recv()  # welcome
    return ws


def _client(port: int, sessions: list[str], sources: list[str], read: bool, hold_s: float,
            q: Any) -> None:
    """One client process: open a connection per entry of ``sessions``; read and time every
    event when ``read``, else only ping every 20 s. Reports ("open", n) then ("done", ...)."""
    async def main() -> None:
        token = mint(DEV_SECRET, "fanout", 7200)  # one owner: sessions span processes
        sem = asyncio.Semaphore(50)
        conns: list[Any] = []
        retries, failed = [0], [0]

        async def pinger() -> None:
            while True:
                await asyncio.sleep(20)
                for ws in list(conns):
                    try:
                        await ws.send('{"type":"ping"}')
                    except websockets.ConnectionClosed:
                        closed[0] += 1

        async def one(i: int, sid: str) -> None:
            async with sem:
                for attempt in range(5):  # as a real client would, with backoff
                    try:
                        conns.append(await _connect(port, sources[i % len(sources)], sid,
                                                    token))
                        return
                    except (OSError, EOFError, websockets.InvalidHandshake,
                            websockets.ConnectionClosed, TimeoutError):
                        retries[0] += 1
                        await asyncio.sleep(0.5 * 2 ** attempt)
                failed[0] += 1

        lat: list[float] = []
        got = [0]
        closed = [0]
        # heartbeats run from the first connection on: a ramp of many thousands may take
        # longer than the edge's idle timeout
        beat = asyncio.create_task(pinger())
        await asyncio.gather(*(one(i, s) for i, s in enumerate(sessions)))
        q.put(("open", len(conns), retries[0], failed[0]))

        async def reader(ws: Any) -> None:
            try:
                async for raw in ws:
                    now = time.time()
                    f = orjson.loads(raw)
                    if f.get("type") in ("delta", "chunk"):
                        got[0] += 1
                        if got[0] % 7 == 0:  # a sample keeps the client's own cost down
                            lat.append(now - float(f["text"]))
            except websockets.ConnectionClosed:
                closed[0] += 1

        tasks = [asyncio.create_task(reader(ws)) for ws in conns] if read else []
        tasks.append(beat)
        await asyncio.sleep(hold_s)
        for t in tasks:
            t.cancel()
        gone = sum(1 for ws in conns if ws.close_code is not None)
        q.put(("done", got[0], lat, max(gone, closed[0])))
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)

    asyncio.run(main())


async def _publish(url: str, prefix: str, sessions: list[str], rate: float,
                   seconds: float) -> int:
    bus = Bus(connect(url), prefix=prefix, shards=8)
    n, t0, interval = 0, time.perf_counter(), 1.0 / rate
    pending: set[asyncio.Task[Any]] = set()
    try:
        while time.perf_counter() - t0 < seconds:
            await asyncio.sleep(max(0.0, t0 + n * interval - time.perf_counter()))
            sid = sessions[n % len(sessions)]
            event = {"type": "delta", "turn": 0, "text": repr(time.time())}
            task = asyncio.create_task(bus.append(sid, event))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        await asyncio.gather(*pending)
    finally:
        await bus.close()
    return n


CHUNK_RUN = "1:1:fanout"
"""The run of every session's turn when the feed is ``chunk``."""


async def _publish_chunks(url: str, prefix: str, sessions: list[str], rate: float,
                          seconds: float, lanes: int = 32) -> int:
    """The worker's path for reply text instead: a turn is started in every session
    (``Bus.append`` of its ``turn_start`` with ``run``, before the window), then each event
    is one ``Bus.stream_chunk`` (the run's partial buffer, each holding node's delivery
    stream), ``seq`` 1, 2, ... per session, ``lanes`` in flight, each over its own sessions
    so that a session's chunks stay in order."""
    bus = Bus(connect(url), prefix=prefix, shards=8)

    async def lane(mine: list[str], share: float, t0: float) -> int:
        n, seqs = 0, dict.fromkeys(mine, 0)
        while time.perf_counter() - t0 < seconds:
            await asyncio.sleep(max(0.0, t0 + n / share - time.perf_counter()))
            sid = mine[n % len(mine)]
            seqs[sid] += 1
            text = repr(time.time())
            frame = orjson.dumps(E.chunk(1, 1, seqs[sid], text))
            await bus.stream_chunk(sid, CHUNK_RUN, seqs[sid], frame, text)
            n += 1
        return n

    try:
        for sid in sessions:
            await bus.append(sid, E.turn_start(1, 1), run=CHUNK_RUN)
        await asyncio.sleep(1.0)  # the turn_starts reach the clients before any chunk
        lanes = min(lanes, len(sessions))
        t0 = time.perf_counter()
        # lanes start 1/rate apart: paced together, they would publish in bursts of
        # ``lanes`` events, which the clients would report as delay
        done = await asyncio.gather(*(lane(sessions[w::lanes], rate / lanes, t0 + w / rate)
                                      for w in range(lanes)))
    finally:
        await bus.close()
    return sum(done)


def bench(edges: int, idle: int, receivers: int, sessions: int, rate: float, seconds: float,
          transport: str, tree: Path = ROOT, feed: str = "append") -> dict[str, Any]:
    """One run against the edges of the checkout ``tree`` (events are written with this
    checkout's ``Bus.append``: the key layout is the same in every checkout compared)."""
    prefix = "fanout"
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp), appendonly=False).start()
        env = {**os.environ, "AGENTIA_DEV": "true",  # local: the public dev secret
               "AGENTIA_REDIS_URL": redis.url, "AGENTIA_LOG_LEVEL": "warning",
               "AGENTIA_REDIS_PREFIX": prefix, "AGENTIA_TRANSPORT": transport,
               "AGENTIA_MAX_CONNECTIONS_PER_USER": "100000", "AGENTIA_SEND_QUEUE": "1024",
               **NO_USER_LIMITS}
        # --processes 1 runs the edge itself (AGENTIA_EDGE_READY, its own pid);
        # more run under a supervisor that lists its edges' pids
        try:
            sup, info = spawn(["gateway", "--port", "0", "--processes", str(edges)], env,
                              ("AGENTIA_GATEWAY_READY", "AGENTIA_EDGE_READY"), tree)
        except BaseException:
            redis.stop()
            raise
        procs: list[mp.Process] = []
        try:
            port = int(info["port"])
            edge_pids = [int(x) for x in info.get("pids", str(sup.pid)).split(",")]
            time.sleep(2)
            rss0 = sum(rss_kib(p) for p in edge_pids)
            q: Any = mp.Queue()
            hold = seconds + 60 + (idle + receivers) / 500
            groups: list[tuple[list[str], bool]] = []
            for start in range(0, idle, PER_PROCESS):
                n = min(PER_PROCESS, idle - start)
                groups.append(([f"idle-{start + i}" for i in range(n)], False))
            names = [f"fan-{i % sessions}" for i in range(receivers)]
            for start in range(0, receivers, READERS_PER_PROCESS):
                groups.append((names[start:start + READERS_PER_PROCESS], True))
            t0 = time.perf_counter()
            for g, (sids, read) in enumerate(groups):
                sources = [f"127.0.{1 + g}.{2 + j}" for j in range(4)]
                procs.append(mp.Process(target=_client, args=(port, sids, sources, read, hold,
                                                              q)))
                procs[-1].start()
            opens = [client_result(q, procs, 900) for _ in procs]
            opened = sum(o[1] for o in opens)
            ramp_s = time.perf_counter() - t0
            time.sleep(3)
            rss1 = sum(rss_kib(p) for p in edge_pids)
            cpu0 = sum(cpu_s(p) for p in edge_pids)
            publish = _publish_chunks if feed == "chunk" else _publish
            p0 = time.perf_counter()
            published = asyncio.run(publish(redis.url, prefix, sorted(set(names)), rate,
                                            seconds))
            time.sleep(2)  # the last frames arrive
            window = time.perf_counter() - p0
            cpu1 = sum(cpu_s(p) for p in edge_pids)
            reports = [client_result(q, procs, hold + 120) for _ in procs]
            delivered = sum(r[1] for r in reports)
            lat = [x for r in reports for x in r[2]]
            closed = sum(r[3] for r in reports)
            edge_cpu = cpu1 - cpu0
            expected = published * (receivers // sessions)
            return {
                "transport": transport, "feed": feed, "edges": edges, "connections": opened,
                "idle": idle, "receivers": receivers, "sessions": sessions,
                "connect_retries": sum(o[2] for o in opens),
                "connect_failed": sum(o[3] for o in opens),
                "ramp_s": round(ramp_s, 1), "edge_rss_kib_per_conn": round(
                    (rss1 - rss0) / max(opened, 1), 2),
                "events_published": published, "frames_expected": expected,
                "frames_delivered": delivered, "frames_lost": expected - delivered,
                "closed_connections": closed, "window_s": round(window, 1),
                "frames_per_s": round(delivered / window),
                "edge_cpu_s": round(edge_cpu, 2),
                "edge_cpu_s_per_1000_frames": round(edge_cpu / max(delivered, 1) * 1000, 4),
                "frames_per_s_per_edge_core": round(delivered / edge_cpu) if edge_cpu else None,
                "latency_p50_ms": round(pct(lat, 50) * 1000, 1),
                "latency_p99_ms": round(pct(lat, 99) * 1000, 1),
                "latency_max_ms": round(max(lat) * 1000, 1) if lat else None,
            }
        finally:
            for p in procs:
                p.join(5)
                if p.is_alive():
                    p.kill()
            stop_all([sup])
            redis.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edges", type=int, default=2)
    p.add_argument("--idle", type=int, default=0, help="idle connections held meanwhile")
    p.add_argument("--receivers", type=int, default=2000)
    p.add_argument("--sessions", type=int, default=100)
    p.add_argument("--rate", type=float, default=500.0, help="events published per second")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--transport", default="picows", choices=("picows", "websockets"))
    p.add_argument("--feed", default="append", choices=("append", "chunk"),
                   help="each event: a log event (Bus.append) or a piece of reply text "
                        "(Bus.stream_chunk in a turn started before the window)")
    p.add_argument("--record", action="store_true",
                   help="write loadtest/results/edge-fanout.json (or --record-as)")
    p.add_argument("--record-as", default=None)
    p.add_argument("--notes", default="")
    p.add_argument("--tree", type=Path, action="append",
                   help="a checkout whose edges to measure (repeatable: side by side in one "
                        "run, in turn for --rounds rounds, the order reversed every other "
                        "round; recorded as edge-fanout-trees)")
    p.add_argument("--rounds", type=int, default=1)
    a = p.parse_args()
    # SIGTERM (timeout, CI) unwinds like Ctrl-C, so bench()'s finally stops the edges and Redis
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if a.tree:
            res: Any = {"runs": trees(a)}
        else:
            res = bench(a.edges, a.idle, a.receivers, a.sessions, a.rate, a.seconds,
                        a.transport, feed=a.feed)
    except KeyboardInterrupt:
        sys.exit("bench_fanout: interrupted; its edges and Redis are stopped")
    print(orjson.dumps(res, option=orjson.OPT_INDENT_2).decode())
    if a.record:
        name = a.record_as or ("edge-fanout-trees" if a.tree else "edge-fanout")
        print("recorded", record(name, res, notes=a.notes))


def trees(a: Any) -> list[dict[str, Any]]:
    runs = []
    for r in range(a.rounds):
        for tree in (a.tree if r % 2 == 0 else a.tree[::-1]):
            tree = tree.resolve()
            res = bench(a.edges, a.idle, a.receivers, a.sessions, a.rate, a.seconds,
                        a.transport, tree, a.feed)
            commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short=12", "HEAD"],
                                    capture_output=True, text=True, check=False).stdout.strip()
            runs.append({"tree": str(tree), "commit": commit, "round": r, **res})
            print(f"round {r} {tree} {commit}: {res['frames_per_s_per_edge_core']} frames/s "
                  f"per edge core, p50 {res['latency_p50_ms']} ms, lost {res['frames_lost']}",
                  file=sys.stderr)
    return runs


if __name__ == "__main__":
    main()
