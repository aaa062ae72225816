"""The suite's Locust Users, on the raw-socket connections of :mod:`loadtest.locust.wsconn`.

Runs only inside Locust's processes (importing Locust monkey-patches the standard library with
gevent). The options, counters and timelines are in :mod:`loadtest.locust.counters`.

Users:

* :class:`HoldUser` opens a batch of ``--ws-batch`` authenticated connections, paced so that all
  HoldUsers together open ``--ws-open-rate`` connections a second, each through ``welcome``;
  then holds them idle, sending ``{"type": "ping"}`` every ``--ws-heartbeat`` seconds. A held
  connection has no greenlet: one gevent io watcher per socket reads pongs and close frames in
  the hub. Reports ``WS handshake`` (time to ``welcome``; a failure's message is ``HTTP <status>``,
  ``close <code>``, ``timeout`` or the errno name), ``WS pong`` (heartbeat round trip; failure
  ``timeout`` when no pong came back within a heartbeat) and ``WS drop`` (a held connection
  closed by the server or the network, by close code; ``close 1006`` without a close frame).
* :class:`~loadtest.locust.chatuser.ChatUser` holds one connection and sends turns
  (``{"type": "send", "id": ..., "text": ...}``) at ``--ws-turn-rate`` turns/s over all
  ChatUsers, one turn in flight per User. Reports ``WS ack``, ``WS first_chunk`` and
  ``WS full_turn`` (times from sending the turn), failures by error code (``error rate_limited``,
  ``turn_error turn_failed``, ``cancelled``), close code or ``timeout``.

Tokens: ``--ws-token`` (or ``AGENTIA_TOKEN``) is used for every connection when given;
otherwise each connection gets its own user, an HS256 token minted with
``gateway.auth.mint(AGENTIA_JWT_SECRET or the dev secret, user, ttl)``. Sockets are spread over
several 127.0.0.x source addresses (4 per Locust process by default), bound with
``IP_BIND_ADDRESS_NO_PORT`` so the kernel picks the port at ``connect`` with the whole 4-tuple.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import time
from typing import Any
from urllib.parse import urlsplit

import gevent
from gevent.pool import Pool
from locust import User, constant, task
from locust.env import Environment
from locust.runners import WorkerRunner

from agentia.settings import DEV_SECRET
from gateway.auth import mint
from loadtest import wsframe
from loadtest.locust.counters import Tally, record, totals
from loadtest.locust.wsconn import WSConnection, WSError, describe

__all__ = ["AgentiaWSUser", "HoldUser", "batch_size", "fire", "sources", "totals"]

PING_PAYLOAD = b'{"type":"ping"}'


# ------------------------------------------------------------------ shared by the Users

_ids = itertools.count()
_run = os.urandom(3).hex()
_sources: list[str] = []


def sources(environment: Environment) -> list[str]:
    """This process's source addresses (chosen once, by worker index when distributed)."""
    if not _sources:
        spec = environment.parsed_options.ws_sources if environment.parsed_options else "4"
        if "," in spec or "." in spec:
            _sources.extend(s.strip() for s in spec.split(",") if s.strip())
        else:
            k = max(1, int(spec))
            runner = environment.runner
            index = runner.worker_index if isinstance(runner, WorkerRunner) else 0
            _sources.extend(f"127.0.0.{2 + (index * k + j) % 250}" for j in range(k))
    return _sources


def fire(environment: Environment, name: str, started: float, length: int = 0,
         exc: BaseException | None = None, ms: float | None = None) -> None:
    """Report one request to Locust (``request_type="WS"``) and to the per-second timeline."""
    if ms is None:
        ms = (time.perf_counter() - started) * 1000
    record(name, ms, exc is None)
    environment.events.request.fire(
        request_type="WS", name=name, response_length=length, context={}, response_time=ms,
        exception=describe(exc) if exc is not None else None)


class AgentiaWSUser(User):
    """What both Users share: the target address, tokens, source addresses."""

    abstract = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        url = urlsplit(self.host or "ws://127.0.0.1:8765")
        self.addr = (url.hostname or "127.0.0.1", url.port or 80)
        self.opts = environment.parsed_options
        self.uid = f"{_run}-{os.getpid()}-{next(_ids)}"
        self.n = 0
        if Tally.started_at == 0.0:
            Tally.started_at = time.monotonic()

    def token(self, user: str) -> str:
        if self.opts.ws_token:
            return str(self.opts.ws_token)
        secret = os.environ.get("AGENTIA_JWT_SECRET") or DEV_SECRET
        return mint(secret, user, int(self.opts.ws_ttl))

    def source(self) -> str | None:
        """The next source address (only towards loopback: 127.0.0.x are local addresses)."""
        if not self.addr[0].startswith("127."):
            return None
        src = sources(self.environment)
        self.n += 1
        return src[self.n % len(src)]

    def connect(self, user: str) -> WSConnection | None:
        """Open one connection through ``welcome`` and report it as ``WS handshake``."""
        token, source = self.token(user), self.source()
        t0 = time.perf_counter()
        try:
            conn, _, size = WSConnection.open(
                self.addr, source, self.opts.ws_path, token, self.opts.ws_token_in,
                float(self.opts.ws_timeout))
        except Exception as exc:
            Tally.failed += 1
            fire(self.environment, "handshake", t0, exc=exc)
            return None
        Tally.opened += 1
        Tally.open += 1
        fire(self.environment, "handshake", t0, size)
        return conn


# ------------------------------------------------------------------ HoldUser


class HoldUser(AgentiaWSUser):
    """Holds a batch of idle authenticated connections, pinging each every heartbeat."""

    abstract = False
    wait_time = constant(0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.conns: set[WSConnection] = set()
        self.pool = Pool(max(1, int(self.opts.ws_inflight)))
        self.batch = batch_size(self.opts)
        self.next_ping = 0.0

    def on_start(self) -> None:
        users = math.ceil(self.opts.ws_connections / self.batch)
        rate = max(0.1, float(self.opts.ws_open_rate) / users)  # this User's share
        next_t = time.perf_counter()
        # Heartbeats start with the first connection, as a real client's do: a batch that
        # opens slower than the edge's idle timeout (90 s) must not lose its first sockets.
        self.next_ping = time.perf_counter() + random.uniform(0, self.opts.ws_heartbeat)
        beating = gevent.spawn(self._beat_while_opening)
        for i in range(self.batch):
            now = time.perf_counter()
            if next_t > now:
                gevent.sleep(next_t - now)
            next_t = max(next_t + 1 / rate, now - 1.0)  # no catch-up burst beyond 1 s
            self.pool.spawn(self._open_one, i)  # waits while ws_inflight are in flight
        self.pool.join()
        beating.kill(block=True)

    def _beat_while_opening(self) -> None:
        while True:
            self.heartbeat()

    def _open_one(self, i: int) -> None:
        conn = self.connect(f"hold-{self.uid}-{i}")
        if conn is not None:
            self.conns.add(conn)
            conn.watch(self._readable)

    def _readable(self, conn: WSConnection) -> None:
        """Runs in the hub: must never block or switch greenlets."""
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn, WSError("close 1006", 1006))
            return
        conn.buf += data
        while True:
            try:
                frame = conn.next_frame()
            except WSError as exc:
                self._drop(conn, exc)
                return
            if frame is None:
                return
            op, payload = frame
            if op == wsframe.TEXT and b'"pong"' in payload[:40]:
                if conn.ping_at:
                    fire(self.environment, "pong", conn.ping_at)
                    conn.ping_at = 0.0
            elif (ended := conn.answer_control(op, payload)) is not None:
                self._drop(conn, ended)
                return

    def _drop(self, conn: WSConnection, exc: WSError) -> None:
        if conn in self.conns:
            self.conns.discard(conn)
            Tally.open -= 1
            Tally.dropped += 1
            fire(self.environment, "drop", time.perf_counter(), exc=exc, ms=0)
        if conn.watcher is not None:
            conn.watcher.stop()
            conn.watcher.close()
            conn.watcher = None
        conn.sock.close()

    @task
    def heartbeat(self) -> None:
        gevent.sleep(max(0.0, self.next_ping - time.perf_counter()))
        self.next_ping = time.perf_counter() + float(self.opts.ws_heartbeat)
        for conn in list(self.conns):
            if conn.ping_at:
                fire(self.environment, "pong", conn.ping_at, exc=WSError("timeout"))
            conn.ping_at = time.perf_counter()
            try:
                conn.sock.send(wsframe.frame(wsframe.TEXT, PING_PAYLOAD))
            except OSError as exc:  # BlockingIOError too: a full send buffer on a ping
                self._drop(conn, describe(exc))

    def on_stop(self) -> None:
        self.pool.kill(block=True)
        for conn in list(self.conns):
            self.conns.discard(conn)
            Tally.open -= 1
            conn.close(1000)


def batch_size(opts: Any) -> int:
    """Connections per HoldUser: ``--ws-batch``, evened out so users x batch = connections
    whenever ``connections`` divides evenly (else a few more are opened)."""
    users = math.ceil(int(opts.ws_connections) / max(1, int(opts.ws_batch)))
    return max(1, math.ceil(int(opts.ws_connections) / users))
