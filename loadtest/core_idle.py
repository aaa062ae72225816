"""``bench_core idle``: N authenticated idle connections to one edge process: the edge's RSS
per connection, CPU-seconds per 1,000 handshakes and per 1,000 heartbeats, handshake latency,
drops while held (the figures: loadtest/bench_core.py)."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websockets

from agentia.settings import DEV_SECRET
from agentia.supervise import stop_all
from gateway.auth import mint
from launch.redis_server import RedisServer
from loadtest.proc_stats import (
    IP_BIND_ADDRESS_NO_PORT,
    NO_USER_LIMITS,
    ROOT,
    cpu_s,
    pct,
    rss_kib,
    slab_kib,
    spawn,
)


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


def client_result(q: Any, procs: list[mp.Process], timeout: float) -> Any:
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
                lat += client_result(q, procs, 600)[1]
            wall = time.perf_counter() - t0
            cpu1, rss1, k1 = cpu_s(edge.pid), rss_kib(edge.pid), slab_kib()
            # heartbeats: each client pings every `heartbeat` s from the end of its own ramp
            # (and once more at the end of the hold); the window ends half a heartbeat after
            # the last full round, so that neither the final pings nor the closes count
            rounds = max(0, int((hold_s - heartbeat) // heartbeat))
            time.sleep((rounds + 0.5) * heartbeat if rounds else 0)
            cpu2 = cpu_s(edge.pid)
            held = [client_result(q, procs, hold_s + 600) for _ in procs]
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
