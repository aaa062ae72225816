"""Users of the stream scenarios (``reconnect.py``, ``slow.py``): held connections that receive
a steady stream of session events, resume after a drop as docs/protocol.md section 6 says, and
record every offset they received so the runner can compare them with the session logs.

A *lineage* is one logical client: a session (shared by ``--ws-connections / --ws-sessions``
lineages, all of one user, like tabs) and the successive connections that carry it. It keeps
what a section 6 client keeps (``epoch``, ``last``: every offset up to it received) and, for
the verdict, every offset received with the CRC-32 of its frame. Per connection the protocol
promises: after ``welcome`` (first connection) or ``resumed`` (a reconnection) live events come
in order, each once, without gaps; between a reconnection's ``welcome`` and its ``resumed``,
replayed and live events may mix and repeat. So a repeated offset counts as ``duplicated``
outside that window and as ``redelivered`` (allowed, reported) inside it; a live event that is
not ``previous + 1`` counts as ``out_of_order``. Clients never heal a gap by resuming again: a
gap stays visible as lost events.

After a drop a lineage reconnects (same URL: SO_REUSEPORT spreads it over the live edge
processes) after a random wait of up to ``--ws-reconnect-jitter`` s, at most 8 attempts with
backoff, and sends ``resume`` with ``after = last`` and its epoch. Locust requests: ``resume``
(connect to ``resumed``, failures by reason), ``outage`` (drop to ``resumed``), ``event`` (the
event's ``ts``, set by the publisher just before it appended the event, to its arrival; live
events of reading lineages only), plus ``handshake``, ``pong`` and ``drop`` as in
``wsuser``.

The runner drives the phases through the file ``<--ws-control>/phase`` (read every 0.25 s):
``ramp`` (no file), ``steady`` (the publisher runs), ``slow`` (slow lineages, every
``1/--ws-slow-fraction``-th, stop reading their sockets), ``settle``, ``report`` (each Locust
process writes ``lineages-<pid>.jsonl``; slow lineages first read what their socket holds to
see how the edge closed them), ``stop`` (the shape ends the run).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import random
import time
from pathlib import Path
from typing import Any

import gevent
import orjson
from gevent.pool import Group, Pool
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtest import wsframe
from loadtest.locust.counters import Tally
from loadtest.locust.lineage import Lineage
from loadtest.locust.wsconn import WSConnection, WSError, describe
from loadtest.locust.wsuser import HoldUser, fire

MAX_ATTEMPTS = 8
EVENT_PREFIX = b'{"offset":'


@events.init_command_line_parser.add_listener
def _options(parser: Any, **_: Any) -> None:
    def opt(name: str, env: str, **kw: Any) -> None:
        parser.add_argument(name, env_var=f"AGENTIA_LOAD_{env}", include_in_web_ui=False, **kw)

    opt("--ws-control", "CONTROL", default="", help="streams: the runner's control directory")
    opt("--ws-sessions", "SESSIONS", type=int, default=100,
        help="streams: sessions the lineages share")
    opt("--ws-session-prefix", "SESSION_PREFIX", default="load",
        help="streams: session ids are <prefix>-<k>, users <prefix>-u<k>")
    opt("--ws-slow-fraction", "SLOW_FRACTION", type=float, default=0.0,
        help="streams: fraction of lineages that stop reading in the slow phase")
    opt("--ws-slow-rcvbuf", "SLOW_RCVBUF", type=int, default=4096,
        help="streams: SO_RCVBUF of the slow lineages' sockets, bytes")
    opt("--ws-reconnect-jitter", "RECONNECT_JITTER", type=float, default=1.0,
        help="streams: a dropped lineage waits up to this many s before reconnecting")
    opt("--ws-max-seconds", "MAX_SECONDS", type=float, default=600.0,
        help="streams: the run ends after this many s whatever the phase")


# ------------------------------------------------------------------ phases


class Phase:
    now = "ramp"
    users: list[StreamUser] = []


def phase_file(environment: Environment) -> Path | None:
    opts = environment.parsed_options
    control = getattr(opts, "ws_control", "") if opts is not None else ""
    return Path(control) / "phase" if control else None


def read_phase(environment: Environment) -> str:
    path = phase_file(environment)
    try:
        return path.read_text().strip() or "ramp" if path else "ramp"
    except OSError:
        return "ramp"


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, MasterRunner) or phase_file(environment) is None:
        return

    def poll() -> None:
        while True:
            new = read_phase(environment)
            if new != Phase.now:
                Phase.now = new
                if new == "slow":
                    for user in list(Phase.users):
                        user.go_slow()
                elif new == "report":
                    write_report(environment)
            gevent.sleep(0.25)

    gevent.spawn(poll)


def write_report(environment: Environment) -> None:
    """Every lineage of this process, one JSON line each, in one file (renamed into place)."""
    path = phase_file(environment)
    assert path is not None
    finish_slow(Phase.users)
    lines = [orjson.dumps(lin.report()) for user in Phase.users for lin in user.lineages]
    target = path.parent / f"lineages-{os.getpid()}.jsonl"
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(b"\n".join(lines) + (b"\n" if lines else b""))
    tmp.rename(target)


_lineage_ids = itertools.count()


# ------------------------------------------------------------------ the User


class StreamUser(HoldUser):
    """A batch of lineages: opened at the storm's pace, then read in the hub like HoldUser's
    connections, reconnected and resumed when dropped."""

    abstract = False

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.lineages: list[Lineage] = []
        self.reconnecting = Group()  # reconnections: at most one per lineage
        Phase.users.append(self)

    def _lineage(self) -> Lineage:
        opts = self.opts
        idx = next(_lineage_ids)
        runner = self.environment.runner
        worker = runner.worker_index if isinstance(runner, WorkerRunner) else 0
        k = (idx + worker * 7919) % max(1, int(opts.ws_sessions))
        f = float(opts.ws_slow_fraction)
        slow = f > 0 and int((idx + 1) * f) != int(idx * f)
        prefix = opts.ws_session_prefix
        return Lineage(idx, f"{prefix}-{k}", f"{prefix}-u{k}", slow)

    def _open(self, lin: Lineage) -> tuple[WSConnection, dict[str, Any]]:
        path = self.opts.ws_path
        path += ("&" if "?" in path else "?") + f"session={lin.session}"
        conn, welcome, _ = WSConnection.open(
            self.addr, self.source(), path, self.token(lin.user), self.opts.ws_token_in,
            float(self.opts.ws_timeout), int(self.opts.ws_slow_rcvbuf) if lin.slow else 0)
        return conn, welcome

    def _open_one(self, i: int) -> None:
        lin = self._lineage()
        self.lineages.append(lin)
        t0 = time.perf_counter()
        try:
            conn, welcome = self._open(lin)
        except Exception as exc:
            Tally.failed += 1
            fire(self.environment, "handshake", t0, exc=exc)
            lin.outcome = f"handshake failed: {describe(exc)}"
            return
        Tally.opened += 1
        Tally.open += 1
        fire(self.environment, "handshake", t0)
        lin.welcome(welcome)
        self._attach(lin, conn)

    def _attach(self, lin: Lineage, conn: WSConnection) -> None:
        lin.conn, conn.tag = conn, lin
        self.conns.add(conn)
        conn.watch(self._readable)
        self._frames(conn)  # what came with the welcome

    # -- reading, in the hub (never blocks)

    def _readable(self, conn: WSConnection) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self._drop(conn, describe(exc))
            return
        if not data:
            self._drop(conn, WSError("close 1006", 1006))
            return
        conn.buf += data
        self._frames(conn)

    def _frames(self, conn: WSConnection) -> None:
        lin: Lineage = conn.tag
        while lin.conn is conn:
            try:
                frame = conn.next_frame()
            except WSError as exc:
                self._drop(conn, exc)
                return
            if frame is None:
                return
            op, payload = frame
            if op == wsframe.TEXT:
                if payload.startswith(EVENT_PREFIX):
                    self._event(lin, payload)
                else:
                    self._control(lin, conn, orjson.loads(payload))
            elif (ended := conn.answer_control(op, payload)) is not None:
                self._drop(conn, ended)
                return

    def _event(self, lin: Lineage, payload: bytes) -> None:
        f = orjson.loads(payload)
        if lin.event(int(f["offset"]), payload) and not lin.slow and "ts" in f:
            fire(self.environment, "event", 0.0, len(payload),
                 ms=max(0.0, time.time() - float(f["ts"])) * 1000)

    def _control(self, lin: Lineage, conn: WSConnection, f: dict[str, Any]) -> None:
        kind = f.get("type")
        if kind == "pong":
            if conn.ping_at:
                fire(self.environment, "pong", conn.ping_at)
                conn.ping_at = 0.0
        elif kind == "resumed" and lin.resuming and f.get("id") == lin.rid:
            lin.resuming = False
            lin.resumed += 1
            lin.live = int(f["offset"])
            lin.unrecovered += not f.get("recovered")
            fire(self.environment, "resume", lin.t_attempt)
            fire(self.environment, "outage", lin.t_drop)
        elif kind == "error" and lin.resuming and f.get("ref") == lin.rid:
            wait = float(f.get("retry_after_ms") or 1000) / 1000  # rate_limited, unavailable
            fire(self.environment, "resume", lin.t_attempt, exc=WSError(f"error {f.get('code')}"))
            gevent.spawn_later(wait, self._send_resume, lin, conn)

    def _send_resume(self, lin: Lineage, conn: WSConnection) -> None:
        if lin.conn is not conn:
            return
        lin.t_attempt = time.perf_counter()
        frame = {"type": "resume", "after": lin.last, "epoch": lin.epoch, "id": lin.rid}
        try:
            conn.sock.send(wsframe.frame(wsframe.TEXT, orjson.dumps(frame)))
        except OSError as exc:
            self._drop(conn, describe(exc))

    # -- drops and reconnections

    def _drop(self, conn: WSConnection, exc: WSError) -> None:
        lin: Lineage | None = conn.tag
        self.conns.discard(conn)
        if lin is not None and lin.conn is conn:
            lin.conn = None
            lin.t_drop = time.perf_counter()
            Tally.open -= 1
            Tally.dropped += 1
            fire(self.environment, "drop", lin.t_drop, exc=exc, ms=0)
            if lin.resuming:  # dropped before its resume was answered
                fire(self.environment, "resume", lin.t_attempt, exc=exc)
            stopped_reading = lin.slow and Phase.now not in ("ramp", "steady")
            if not stopped_reading and Phase.now not in ("report", "stop"):
                self.reconnecting.spawn(self._reconnect, lin)
        if conn.watcher is not None:
            conn.watcher.stop()
            conn.watcher.close()
            conn.watcher = None
        conn.sock.close()

    def _reconnect(self, lin: Lineage) -> None:
        gevent.sleep(random.uniform(0, float(self.opts.ws_reconnect_jitter)))
        for attempt in range(MAX_ATTEMPTS):
            if Phase.now in ("report", "stop"):
                return
            lin.t_attempt = time.perf_counter()
            try:
                conn, _ = self._open(lin)
            except Exception as exc:
                fire(self.environment, "resume", lin.t_attempt, exc=exc)
                gevent.sleep(min(0.5 * 2 ** attempt, 5.0) * random.uniform(0.5, 1.0))
                continue
            frame = {"type": "resume", "after": lin.last, "epoch": lin.epoch,
                     "id": f"r-{lin.reconnects + 1}"}
            try:  # before watching: nothing else writes to it yet
                conn.sock.sendall(wsframe.frame(wsframe.TEXT, orjson.dumps(frame)))
            except OSError as exc:
                conn.sock.close()
                fire(self.environment, "resume", lin.t_attempt, exc=exc)
                continue
            Tally.open += 1
            lin.reconnects += 1
            lin.rid = frame["id"]
            lin.resuming = True
            self._attach(lin, conn)
            return
        lin.gave_up = True

    # -- phases

    def go_slow(self) -> None:
        """Slow lineages stop reading (and pinging): the edge must close them as SLOW."""
        for lin in self.lineages:
            conn = lin.conn
            if lin.slow and conn is not None and conn.watcher is not None:
                conn.watcher.stop()
                self.conns.discard(conn)

    def on_stop(self) -> None:
        self.pool.kill(block=True)
        self.reconnecting.kill(block=False)
        for lin in self.lineages:
            conn, lin.conn = lin.conn, None
            if conn is not None:
                self.conns.discard(conn)
                Tally.open -= 1
                conn.close(1000)
        with contextlib.suppress(ValueError):
            Phase.users.remove(self)


def drain_outcome(conn: WSConnection, quiet: float = 1.0, budget: float = 6.0) -> str:
    """Read what a socket that stopped being read holds until it ends: ``close <code>`` (a
    close frame), ``close 1006`` (the edge closed the socket without one: FIN after the bytes
    its kernel still held), an errno name such as ``ECONNRESET``, or ``open`` when nothing came
    for ``quiet`` s (or ``budget`` s passed) without an end. Cooperative (gevent)."""
    deadline = time.monotonic() + budget
    with contextlib.suppress(OSError):
        conn.sock.settimeout(quiet)
    while time.monotonic() < deadline:
        try:
            data = conn.sock.recv(65536)
        except TimeoutError:
            return "open"
        except OSError as exc:
            return errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        if not data:
            return "close 1006"
        conn.buf += data
        while True:
            try:
                frame = conn.next_frame()
            except WSError as exc:
                return str(exc)
            if frame is None:
                break
            if frame[0] == wsframe.CLOSE:
                return f"close {wsframe.close_code(frame[1])}"
    return "open"


def finish_slow(users: list[StreamUser]) -> None:
    """Before the report: how each slow lineage's connection ended (read all at once)."""

    def one(lin: Lineage) -> None:
        lin.outcome = drain_outcome(lin.conn)
        if lin.outcome != "open":
            conn, lin.conn = lin.conn, None
            Tally.open -= 1
            conn.sock.close()

    pool = Pool(1000)
    for user in users:
        for lin in user.lineages:
            if lin.slow and lin.conn is not None and not lin.outcome:
                pool.spawn(one, lin)
    pool.join(timeout=20)

