"""Render the Grafana dashboard's key panels (``ops/grafana/agentia.json``) from a real run.

Nothing here is drawn by hand: the script starts the whole system with ``agentia up`` (two edge
processes, one worker, the control plane, a private Redis, all in a temporary state directory),
drives a bounded load from asyncio ``websockets`` clients on loopback, scrapes the control
plane's ``/metrics`` every 2 s, evaluates the dashboard's queries on those scrapes (rates from
counter deltas, quantiles from histogram bucket deltas, as PromQL's ``rate`` and
``histogram_quantile`` do) and plots them with matplotlib into ``docs/img/dashboard-*.png``.

The load, over ``--seconds`` (75 by default):

* ``--connections`` (300) chat clients connect over the first 40 % of the run, spread over the
  edges, one session each; every client sends ``{"type": "ping"}`` every 20 s and reads every
  frame;
* chat turns at ``--turn-rate`` (4) per second, from random clients, until 8 s before the end;
* failures, so the failure panels have data: handshakes with a wrong or expired token (401),
  on another user's session (403), a few well-formed clients sending one bad frame each,
  flooding clients (25 bad frames: closed ``4002 FLOOD``) and silent clients that never ping
  (closed ``4001 IDLE``: the run sets ``AGENTIA_IDLE_TIMEOUT_S``, 30 s by default);
* at the end every client closes and the scraper keeps going a few seconds.

Evaluation differs from Prometheus in one respect: a labelled series absent from a scrape counts
as 0, so the first increments of a new label value (the first ``flood`` close, say) show up
here. Prometheus' ``rate`` and ``increase`` start from a series' first sample and miss them,
because ``agentia/metrics.py`` does not pre-create its label values.

Then ``agentia up`` gets SIGINT (it stops its children and Redis); anything from its
``pids=`` list still alive after 40 s is killed by PID. Needs matplotlib (not a dependency
of the gateway)::

    .venv/bin/pip install matplotlib
    .venv/bin/python -m loadtest.render_dashboard            # ~90 s end to end
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from agentia.settings import DEV_SECRET
from agentia.supervise import StartError, start
from gateway.auth import mint
from loadtest.dashboard_plot import render
from loadtest.promql import Scrape, fetch, parse, pct

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ("what is 6 * 7", "what time is it", "hello there", "what is 12.5 / 5 + 3",
           "what did I say", "tell me about the weather")
PING_EVERY_S = 20.0
SCRAPE_EVERY_S = 2.0


# ------------------------------------------------------------------ the system under test


@dataclass
class System:
    proc: subprocess.Popen[bytes]
    url: str
    api: str
    pids: list[int]
    edges: list[int]  # ports
    log: Path


def start_system(state: Path, edges: int, workers: int, idle_timeout: float,
                 timeout: float = 90) -> System:
    """``agentia up`` in ``state``; returns once it printed its AGENTIA_UP_READY line."""
    env = dict(os.environ)
    for var in ("AGENTIA_REDIS_URL", "PROMETHEUS_MULTIPROC_DIR", "OPENAI_API_KEY",
                "AGENTIA_MODEL_BASE_URL"):
        env.pop(var, None)  # a private Redis, fresh metrics, the offline demo model
    env.update(AGENTIA_STATE_DIR=str(state), PYTHONUNBUFFERED="1",
               AGENTIA_IDLE_TIMEOUT_S=str(idle_timeout))
    log = state / "up.log"
    cmd = [sys.executable, "-m", "launch.cli", "up", "--port", "0", "--api-port", "0",
           "--edges", str(edges), "--workers", str(workers)]
    with open(log, "ab") as out:
        try:
            proc, kv = start(cmd, env, "AGENTIA_UP_READY", timeout, cwd=ROOT, stderr=out,
                             echo=out)
        except StartError as exc:
            out.close()
            raise RuntimeError(f"{exc}; see {log}:\n{log.read_text()[-3000:]}") from None

    def pump() -> None:  # keeps draining up's stdout so it never blocks on a full pipe
        assert proc.stdout is not None
        with open(log, "ab") as out:
            for raw in proc.stdout:
                out.write(raw)
                out.flush()

    threading.Thread(target=pump, daemon=True).start()
    return System(proc, kv["url"], kv["api"], [int(p) for p in kv["pids"].split(",")],
                  [int(e.split(":")[1]) for e in kv["edges"].split(",")], log)


def _alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return stat[0] != "Z" and (b"launch.cli" in cmdline or b"redis-server" in cmdline)


def stop_system_proc(proc: subprocess.Popen[bytes], pids: list[int]) -> None:
    """SIGINT to ``agentia up`` (it stops its children and Redis), then, as a last resort,
    SIGKILL by PID to whatever it listed and did not stop."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            print(f"render_dashboard: pid {pid} outlived agentia up; killing it", file=sys.stderr)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ clients


@dataclass
class Stats:
    """What the clients saw, to cross-check the server's metrics."""
    sent: int = 0
    acks: int = 0
    replies: int = 0
    ttfd: list[float] = field(default_factory=list)
    full: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    refused: Counter[int] = field(default_factory=Counter)
    connect_failed: int = 0
    open: int = 0  # connections open right now, of every kind


class LoadClient:
    def __init__(self, ws: ClientConnection, stats: Stats, pool: set[LoadClient]) -> None:
        self.ws, self.stats, self.pool = ws, stats, pool
        self.sent_at: dict[str, float] = {}    # client id -> when sent
        self.turn_at: dict[int, float] = {}    # turn offset -> when its send was sent
        self.last_ping = time.monotonic()
        stats.open += 1
        self.reader = asyncio.create_task(self._read())

    async def send(self, frame: dict[str, Any] | str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(frame if isinstance(frame, str) else orjson.dumps(frame).decode())

    async def turn(self, text: str) -> None:
        cid = uuid.uuid4().hex[:16]
        self.sent_at[cid] = time.monotonic()
        self.stats.sent += 1
        await self.send({"type": "send", "id": cid, "text": text})

    def _started(self, cid: str | None, offset: int) -> None:
        t = self.sent_at.pop(cid) if cid in self.sent_at else None
        if t is not None:
            self.turn_at[offset] = t

    async def _read(self) -> None:
        st = self.stats
        try:
            async for msg in self.ws:
                f = orjson.loads(msg)
                kind, now = f.get("type"), time.monotonic()
                if kind == "ack":
                    st.acks += 1
                    self._started(f.get("id"), f["offset"])
                elif kind == "user":
                    self._started(f.get("id"), f["offset"])
                elif kind in ("chunk", "partial") and f["turn"] in self.turn_at:
                    t = self.turn_at[f["turn"]]
                    if t > 0:
                        st.ttfd.append(now - t)
                        self.turn_at[f["turn"]] = -t  # first reply text seen
                elif kind == "reply":
                    st.replies += 1
                    began = self.turn_at.pop(f["turn"], None)
                    if began is not None:
                        st.full.append(now - abs(began))
                elif kind == "error":
                    st.errors[f["code"]] += 1
        except ConnectionClosed:
            pass
        finally:
            code = self.ws.close_code
            st.closes[code if code is not None else 1006] += 1
            st.open -= 1
            self.pool.discard(self)


def ws_url(port: int, session: str) -> str:
    return f"ws://127.0.0.1:{port}/v1/ws?session={session}"


async def connect(port: int, session: str, token: str, stats: Stats) -> ClientConnection | None:
    try:
        return await websockets.connect(
            ws_url(port, session), additional_headers={"Authorization": f"Bearer {token}"},
            compression=None, open_timeout=15, ping_interval=None, max_size=2**20)
    except InvalidStatus as exc:
        stats.refused[exc.response.status_code] += 1
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException):
        stats.connect_failed += 1
    return None


# ------------------------------------------------------------------ the load


@dataclass
class Plan:
    seconds: float
    connections: int
    turn_rate: float
    users: int = 50
    silent: int = 5
    flooders: int = 3
    bad_tokens: int = 6


async def drive(system: System, plan: Plan, secret: str) -> tuple[list[Scrape], Stats, float]:
    stats = Stats()
    pool: set[LoadClient] = set()
    quiet: list[ClientConnection] = []
    scrapes: list[Scrape] = []
    run = uuid.uuid4().hex[:6]
    t0 = time.monotonic()
    wall0 = time.time()
    rng = random.Random(7)
    ports = system.edges
    metrics_url = system.api + "/metrics"

    def now() -> float:
        return time.monotonic() - t0

    async def scraper() -> None:
        while True:
            with contextlib.suppress(Exception):
                text = await asyncio.to_thread(fetch, metrics_url)
                scrapes.append(Scrape(now(), parse(text), stats.open))
            await asyncio.sleep(SCRAPE_EVERY_S - (now() % SCRAPE_EVERY_S))

    async def open_one(i: int) -> None:
        user = f"load{i % plan.users}"
        ws = await connect(ports[i % len(ports)], f"ld-{run}-{i}", mint(secret, user, 3600),
                           stats)
        if ws is not None:
            pool.add(LoadClient(ws, stats, pool))

    async def ramp() -> None:
        ramp_s = plan.seconds * 0.4
        step = 0.25
        batches = max(1, int(ramp_s / step))
        n = 0
        for b in range(1, batches + 1):
            target = round(plan.connections * b / batches)
            await asyncio.gather(*(open_one(i) for i in range(n, target)))
            n = target
            await asyncio.sleep(max(0.0, b * step - now()))

    async def pinger() -> None:
        while True:
            await asyncio.sleep(1.0)
            t = time.monotonic()
            for c in list(pool):
                if t - c.last_ping >= PING_EVERY_S:
                    c.last_ping = t
                    await c.send({"type": "ping"})

    async def turns() -> None:
        await asyncio.sleep(3.0)
        end = plan.seconds - 8
        while now() < end:
            if pool:
                await rng.choice(tuple(pool)).turn(rng.choice(PROMPTS))
            await asyncio.sleep(rng.expovariate(plan.turn_rate))

    async def refused(session: str, token: str) -> None:
        ws = await connect(rng.choice(ports), session, token, stats)
        if ws is not None:  # not expected: count it and go
            await ws.close()

    async def bad_tokens(n: int) -> None:
        wrong = mint("not-the-" + secret, "mallory", 3600)
        expired = mint(secret, "mallory", -60)
        await asyncio.gather(*(refused(f"ld-{run}-bad{i}", wrong if i % 2 else expired)
                               for i in range(n)))

    async def forbidden(n: int) -> None:
        # sessions 0..n-1 belong to load0..; "intruder" may not open them
        await asyncio.gather(*(refused(f"ld-{run}-{i}", mint(secret, "intruder", 3600))
                               for i in range(n)))

    async def bad_frames(n: int) -> None:
        for c in rng.sample(tuple(pool), min(n, len(pool))):
            await c.send("{not json")
            await c.send({"type": "no-such-frame"})

    async def flood(i: int) -> None:
        ws = await connect(ports[i % len(ports)], f"ld-{run}-flood{i}",
                           mint(secret, f"flood{i}", 3600), stats)
        if ws is None:
            return
        c = LoadClient(ws, stats, set())
        for _ in range(25):
            await c.send("not json at all")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(c.reader, 10)

    async def silent(i: int) -> None:
        ws = await connect(ports[i % len(ports)], f"ld-{run}-quiet{i}",
                           mint(secret, f"quiet{i}", 3600), stats)
        if ws is not None:
            quiet.append(ws)
            LoadClient(ws, stats, set())  # reads (and records the close) but never pings

    async def at(t: float, fn: Any, *args: Any) -> None:
        await asyncio.sleep(max(0.0, t - now()))
        await fn(*args)

    async def each(fn: Any, n: int) -> None:
        await asyncio.gather(*(fn(i) for i in range(n)))

    S = plan.seconds
    background = [asyncio.create_task(c) for c in (scraper(), pinger())]
    script = [asyncio.create_task(c) for c in (
        ramp(),
        turns(),
        at(4, each, silent, plan.silent),
        at(S * 0.20, bad_tokens, plan.bad_tokens),
        at(S * 0.30, bad_frames, 10),
        at(S * 0.45, each, flood, plan.flooders),
        at(S * 0.55, forbidden, 3),
        at(S * 0.65, bad_frames, 10),
        at(S * 0.75, bad_tokens, plan.bad_tokens),
    )]
    try:
        await asyncio.sleep(S)
        for t in script:
            t.cancel()
        await asyncio.gather(*script, return_exceptions=True)
        clients = list(pool)
        for k in range(0, len(clients), 50):  # everyone leaves, 50 at a time
            await asyncio.gather(*(c.ws.close() for c in clients[k:k + 50]),
                                 return_exceptions=True)
        await asyncio.gather(*(q.close() for q in quiet), return_exceptions=True)
        await asyncio.sleep(3 * SCRAPE_EVERY_S + 1)
    finally:
        for t in background + script:
            t.cancel()
        await asyncio.gather(*background, *script, return_exceptions=True)
        for c in list(pool):
            c.ws.transport.abort()
    return scrapes, stats, wall0


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=75, help="load duration (20-300)")
    p.add_argument("--connections", type=int, default=300)
    p.add_argument("--turn-rate", type=float, default=4.0, help="chat turns per second")
    p.add_argument("--edges", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--idle-timeout", type=float, default=30.0,
                   help="AGENTIA_IDLE_TIMEOUT_S for the run (must exceed the 20 s ping)")
    p.add_argument("--rate-window", type=float, default=10.0,
                   help="window of rate() for counters, seconds")
    p.add_argument("--quantile-window", type=float, default=30.0,
                   help="window of rate() for histogram quantiles (the dashboard uses 5m)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "dashboard-overview.png")
    a = p.parse_args(argv)
    if not 20 <= a.seconds <= 300 or not 1 <= a.connections <= 5000:
        p.error("--seconds must be 20-300 and --connections 1-5000")
    if a.idle_timeout <= PING_EVERY_S + 2:
        p.error("--idle-timeout must exceed the clients' 20 s ping interval")
    plan = Plan(a.seconds, a.connections, a.turn_rate)
    secret = os.environ.get("AGENTIA_JWT_SECRET", DEV_SECRET)
    command = " ".join(["python -m loadtest.render_dashboard",
                        *(sys.argv[1:] if argv is None else argv)])
    with tempfile.TemporaryDirectory(prefix="agentia-dash-") as tmp:
        state = Path(tmp)
        t_start = time.monotonic()
        system = start_system(state, a.edges, a.workers, a.idle_timeout)
        print(f"render_dashboard: system up in {time.monotonic() - t_start:.1f}s "
              f"(api {system.api}, edges {system.edges}); load for {a.seconds:.0f}s",
              flush=True)
        try:
            scrapes, stats, wall0 = asyncio.run(
                asyncio.wait_for(drive(system, plan, secret), a.seconds + 90))
        finally:
            stop_system_proc(system.proc, system.pids)
        wall1 = time.time()
        if len(scrapes) < 5:
            raise SystemExit(f"only {len(scrapes)} scrapes of {system.api}/metrics succeeded; "
                             f"see {system.log}")
        out = render(scrapes, stats, plan, a.out, wall0, wall1, command, a.rate_window,
                     a.quantile_window, a.edges, a.workers, a.idle_timeout, SCRAPE_EVERY_S,
                     PING_EVERY_S)
    print(f"render_dashboard: {len(scrapes)} scrapes; client side: {stats.sent} turns sent, "
          f"{stats.acks} acks, {stats.replies} replies, first delta p50 "
          f"{pct(stats.ttfd, 0.5):.3f}s p99 {pct(stats.ttfd, 0.99):.3f}s, full turn p50 "
          f"{pct(stats.full, 0.5):.3f}s p99 {pct(stats.full, 0.99):.3f}s; refused "
          f"{dict(stats.refused)}; closes {dict(stats.closes)}; errors {dict(stats.errors)}")
    print(f"render_dashboard: wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
