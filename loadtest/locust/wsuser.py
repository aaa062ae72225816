"""A gevent-friendly ``agentia.v1`` WebSocket client for Locust, and the suite's Users.

Runs only inside Locust's processes (importing Locust monkey-patches the standard library with
gevent). Nothing here depends on a WebSocket library: the opening handshake is a hand-written
HTTP/1.1 Upgrade on a raw socket (status 101, ``Upgrade``/``Connection`` and
``Sec-WebSocket-Accept`` checked), client frames are masked, server frames are parsed here
(text, binary, continuation, ping/pong, close with its code). That keeps a held connection
under 1 KiB in the Locust process (0.9 KiB measured at 20,000), where ``websocket-client``
costs ~13 KiB and one User (greenlet) per connection. IPv4 only.

Users:

* :class:`HoldUser` opens a batch of ``--ws-batch`` authenticated connections, paced so that all
  HoldUsers together open ``--ws-open-rate`` connections a second, each through ``welcome``;
  then holds them idle, sending ``{"type": "ping"}`` every ``--ws-heartbeat`` seconds. A held
  connection has no greenlet: one gevent io watcher per socket reads pongs and close frames in
  the hub. Reports ``WS handshake`` (time to ``welcome``; a failure's message is ``HTTP <status>``,
  ``close <code>``, ``timeout`` or the errno name), ``WS pong`` (heartbeat round trip; failure
  ``timeout`` when no pong came back within a heartbeat) and ``WS drop`` (a held connection
  closed by the server or the network, by close code; ``close 1006`` without a close frame).
* :class:`ChatUser` holds one connection and sends turns
  (``{"type": "send", "id": ..., "text": ...}``) at ``--ws-turn-rate`` turns/s over all
  ChatUsers, one turn in flight per User. Reports ``WS ack``, ``WS first_delta`` and
  ``WS full_turn`` (times from sending the turn), failures by error code (``error rate_limited``,
  ``turn_error turn_failed``, ``cancelled``), close code or ``timeout``.

Tokens: ``--ws-token`` (or ``AGENTIA_TOKEN``) is used for every connection when given;
otherwise each connection gets its own user, an HS256 token minted with
``gateway.auth.mint(AGENTIA_JWT_SECRET or the dev secret, user, ttl)``. Sockets are spread over
several 127.0.0.x source addresses (4 per Locust process by default), bound with
``IP_BIND_ADDRESS_NO_PORT`` so the kernel picks the port at ``connect`` with the whole 4-tuple.

Counters (open, opened, failed, dropped, turns) travel to the master with Locust's worker
reports; the master (or a standalone process) writes them every second to
``<csv prefix>_agentia.csv`` and, on quitting, every request name's response-time histogram to
``<csv prefix>_response_times.json``. The locustfiles' load shapes read the same counters.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import errno
import gc
import hashlib
import itertools
import logging
import math
import os
import random
import socket
import struct
import time
from typing import Any
from urllib.parse import quote, urlsplit

import gevent
import gevent.event
import gevent.lock
import locust.runners
import orjson
from gevent.pool import Pool
from locust import User, constant, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import StatsCSVFileWriter

from agentia.settings import DEV_SECRET
from gateway.auth import mint

# Workers report to the master every second instead of every 3 s: the shapes react to the
# connection counters and the connections-over-time plot has one point a second.
locust.runners.WORKER_REPORT_INTERVAL = 1.0
# A worker whose hub is busy (thousands of events a second on a loaded machine) may miss a few
# heartbeats; with Locust's default (3 s) the master drops it and ends the run midway.
locust.runners.HEARTBEAT_LIVENESS = 15


def _stats_writer_until_closed(self: StatsCSVFileWriter) -> None:
    """Locust 2.47 closes the CSV files at shutdown (locustio/locust#3486) without stopping
    the greenlet that rewrites them every second; when it wakes in between it dies with
    "I/O operation on closed file" and a traceback in the log. Stop it quietly instead."""
    try:
        _stats_writer(self)
    except ValueError:
        if not self.requests_csv_filehandle.closed:
            raise


_stats_writer = StatsCSVFileWriter.stats_writer
StatsCSVFileWriter.stats_writer = _stats_writer_until_closed  # type: ignore[method-assign]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 1 << 20
PING_PAYLOAD = b'{"type":"ping"}'


class WSError(Exception):
    """A refused handshake, a closed connection or a protocol error. ``str()`` is stable (no
    addresses, ids or times in it) because Locust groups failures by it."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code

    def __repr__(self) -> str:  # Locust reports repr(exception): keep it "HTTP 401"
        return str(self)


def describe(exc: BaseException) -> WSError:
    """Turn any exception from a socket operation into a groupable WSError."""
    if isinstance(exc, WSError):
        return exc
    if isinstance(exc, (socket.timeout, TimeoutError, gevent.Timeout)):
        return WSError("timeout")
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in errno.errorcode:
        return WSError(errno.errorcode[exc.errno])
    return WSError(type(exc).__name__)


# ------------------------------------------------------------------ frames


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame, masked with a random key as RFC 6455 requires."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = random.randbytes(4)
    if n:
        stream = (key * (n // 4 + 1))[:n]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(
            n, "big")
    return head + key + payload


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    return encode_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:120])


def close_code(payload: bytes) -> int:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005


class WSConnection:
    """One client connection: the socket and an incremental frame parser.

    ``open()`` is cooperative (gevent) and blocking for the calling greenlet. Afterwards the
    connection is used either from a reader greenlet (:meth:`recv`, ChatUser) or, switched to
    non-blocking with :meth:`watch`, from an io watcher callback in the hub (HoldUser).
    """

    __slots__ = ("buf", "frag", "frag_op", "ping_at", "sock", "tag", "watcher")

    def __init__(self, sock: socket.socket, rest: bytes = b"") -> None:
        self.sock = sock
        self.buf = rest
        self.frag: list[bytes] | None = None
        self.frag_op = 0
        self.ping_at = 0.0
        self.watcher: Any = None
        self.tag: Any = None  # what a User attaches (the stream scenarios: its lineage)

    @classmethod
    def open(cls, addr: tuple[str, int], source: str | None, path: str, token: str,
             token_in: str, timeout: float, rcvbuf: int = 0
             ) -> tuple[WSConnection, dict[str, Any], int]:
        """Connect, upgrade, and read the ``welcome`` frame: (connection, welcome, its size).
        ``rcvbuf`` > 0 sets a small receive buffer before connecting (a slow reader's kernel
        buffer then fills after a few KiB instead of MiBs). Raises WSError (or OSError,
        socket.timeout) on any failure; the socket is closed."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf > 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if source:
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((source, 0))
            sock.settimeout(timeout)
            sock.connect(addr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            headers = [f"Host: {addr[0]}:{addr[1]}", "Upgrade: websocket",
                       "Connection: Upgrade", "Sec-WebSocket-Version: 13"]
            if token_in == "query":
                path += ("&" if "?" in path else "?") + "token=" + quote(token)
                headers.append("Sec-WebSocket-Protocol: agentia.v1")
            elif token_in == "subprotocol":
                headers.append(f"Sec-WebSocket-Protocol: agentia.v1, bearer.{token}")
            else:
                headers.append("Sec-WebSocket-Protocol: agentia.v1")
                headers.append(f"Authorization: Bearer {token}")
            key = base64.b64encode(os.urandom(16))
            headers.append(f"Sec-WebSocket-Key: {key.decode()}")
            request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{h}\r\n" for h in headers)
            sock.sendall(f"{request}\r\n".encode())
            rest = cls._read_upgrade(sock, key)
            conn = cls(sock, rest)
            op, payload = conn.recv()
            welcome = orjson.loads(payload)
            if op != OP_TEXT or welcome.get("type") != "welcome":
                raise WSError("no welcome")
            return conn, welcome, len(payload)
        except BaseException:
            sock.close()
            raise

    @staticmethod
    def _read_upgrade(sock: socket.socket, key: bytes) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise WSError("closed during handshake" if not data else "bad response")
            data += chunk
            if len(data) > 16384:
                raise WSError("bad response")
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or not status[1].isdigit():
            raise WSError("bad response")
        if status[1] != "101":
            raise WSError(f"HTTP {status[1]}")
        hdrs = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            hdrs[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        if hdrs.get("sec-websocket-accept") != accept:
            raise WSError("bad Sec-WebSocket-Accept")
        if hdrs.get("upgrade", "").lower() != "websocket" or \
                "upgrade" not in hdrs.get("connection", "").lower():
            raise WSError("bad Upgrade headers")
        if hdrs.get("sec-websocket-protocol", "agentia.v1") != "agentia.v1":
            raise WSError("bad subprotocol")
        return rest

    # -- parsing

    def answer_control(self, op: int, payload: bytes) -> WSError | None:
        """Answer a PING with its PONG; answer a CLOSE with a close frame and return why the
        connection ended (the caller drops it). Other opcodes: nothing, None."""
        if op == OP_PING:
            with contextlib.suppress(OSError):
                self.sock.send(encode_frame(OP_PONG, payload))
        elif op == OP_CLOSE:
            code = close_code(payload)
            with contextlib.suppress(OSError):
                self.sock.send(close_frame(code if code != 1005 else 1000))
            return WSError(f"close {code}", code)
        return None

    def next_frame(self) -> tuple[int, bytes] | None:
        """The next complete message or control frame in the buffer (consumed), or None."""
        while True:
            buf = self.buf
            n = len(buf)
            if n < 2:
                return None
            b0, b1 = buf[0], buf[1]
            if b1 & 0x80:
                raise WSError("masked server frame", 1002)
            size, head = b1 & 0x7F, 2
            if size == 126:
                if n < 4:
                    return None
                size, head = struct.unpack_from("!H", buf, 2)[0], 4
            elif size == 127:
                if n < 10:
                    return None
                size, head = struct.unpack_from("!Q", buf, 2)[0], 10
            if size > MAX_MESSAGE:
                raise WSError("message too big", 1009)
            if n < head + size:
                return None
            payload = buf[head:head + size]
            self.buf = buf[head + size:]
            fin, op = b0 & 0x80, b0 & 0x0F
            if op >= 0x8:
                return op, payload
            if op == OP_CONT:
                if self.frag is None:
                    raise WSError("unexpected continuation", 1002)
                self.frag.append(payload)
                if fin:
                    frag, self.frag = self.frag, None
                    return self.frag_op, b"".join(frag)
            elif fin:
                return op, payload
            else:
                self.frag, self.frag_op = [payload], op

    # -- blocking use (a reader greenlet)

    def recv(self) -> tuple[int, bytes]:
        """The next data message; answers pings; raises WSError('close <code>') on close."""
        while True:
            frame = self.next_frame()
            if frame is None:
                data = self.sock.recv(65536)
                if not data:
                    raise WSError("close 1006", 1006)
                self.buf += data
                continue
            op, payload = frame
            if op == OP_PING:
                self.sock.sendall(encode_frame(OP_PONG, payload))
            elif op == OP_CLOSE:
                code = close_code(payload)
                with contextlib.suppress(OSError):
                    self.sock.sendall(close_frame(code if code != 1005 else 1000))
                raise WSError(f"close {code}", code)
            elif op in (OP_TEXT, OP_BINARY):
                return op, payload

    # -- non-blocking use (a watcher in the hub)

    def watch(self, callback: Any) -> None:
        self.sock.settimeout(0.0)
        self.watcher = gevent.get_hub().loop.io(self.sock.fileno(), 1)
        self.watcher.start(callback, self)

    def close(self, code: int = 1000) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher.close()
            self.watcher = None
        with contextlib.suppress(OSError):
            self.sock.send(close_frame(code))
        self.sock.close()


# ------------------------------------------------------------------ options and counters


@events.init_command_line_parser.add_listener
def _options(parser: Any, **_: Any) -> None:
    def opt(name: str, env: str, **kw: Any) -> None:
        parser.add_argument(name, env_var=f"AGENTIA_LOAD_{env}", include_in_web_ui=False, **kw)

    opt("--ws-path", "PATH", default="/v1/ws", help="WebSocket path (may carry a query)")
    opt("--ws-token", "TOKEN", default=os.environ.get("AGENTIA_TOKEN", ""),
        help="one token for every connection (default: mint one user per connection)")
    opt("--ws-token-in", "TOKEN_IN", default="header",
        choices=["header", "query", "subprotocol"], help="where the token goes")
    opt("--ws-ttl", "TTL", type=int, default=4 * 3600, help="lifetime of minted tokens, s")
    opt("--ws-sources", "SOURCES", default="4",
        help="source addresses: a count per Locust process (127.0.0.x picked by worker "
             "index) or a comma-separated list")
    opt("--ws-timeout", "TIMEOUT", type=float, default=15.0, help="handshake timeout, s")
    opt("--ws-heartbeat", "HEARTBEAT", type=float, default=20.0, help="ping interval, s")
    opt("--ws-connections", "CONNECTIONS", type=int, default=1000,
        help="storm: connections to open in all")
    opt("--ws-batch", "BATCH", type=int, default=500, help="storm: connections per HoldUser")
    opt("--ws-open-rate", "OPEN_RATE", type=float, default=1000.0,
        help="storm: handshakes started per second, over all HoldUsers")
    opt("--ws-inflight", "INFLIGHT", type=int, default=50,
        help="storm: handshakes in flight per HoldUser at most")
    opt("--ws-hold", "HOLD", type=float, default=60.0,
        help="storm: seconds to hold once every handshake is done")
    opt("--ws-ramp-timeout", "RAMP_TIMEOUT", type=float, default=0.0,
        help="storm: give up waiting for the ramp after this many s (0: 3x the planned ramp "
             "+ 30 s)")
    opt("--ws-chat-users", "CHAT_USERS", type=int, default=20, help="chat: connections")
    opt("--ws-turn-rate", "TURN_RATE", type=float, default=5.0,
        help="chat: turns per second over all ChatUsers")
    opt("--ws-turns", "TURNS", type=int, default=0,
        help="chat: turns in all (0: until --ws-seconds)")
    opt("--ws-seconds", "SECONDS", type=float, default=30.0,
        help="chat: stop sending new turns after this many seconds")
    opt("--ws-turn-timeout", "TURN_TIMEOUT", type=float, default=30.0,
        help="chat: seconds to wait for a turn's reply")
    opt("--ws-text", "TEXT", default="hello there", help="chat: the turn's text")


class Tally:
    """Counters of this process; the master sums the workers' copies."""

    open = opened = failed = dropped = 0
    turns_started = turns_done = turns_failed = 0
    started_at = 0.0

    @classmethod
    def snapshot(cls) -> dict[str, int]:
        return {"open": cls.open, "opened": cls.opened, "failed": cls.failed,
                "dropped": cls.dropped, "turns_started": cls.turns_started,
                "turns_done": cls.turns_done, "turns_failed": cls.turns_failed}


_remote: dict[str, dict[str, int]] = {}
# (name, unix second) -> {rounded ms: count}: what Locust's own history cannot give, exact
# percentiles and rates per second. Workers ship theirs to the master with each report.
_timeline: dict[tuple[str, int], dict[float, int]] = {}


def _round_ms(ms: float) -> float:
    if ms < 10:
        return round(ms, 1)
    if ms < 100:
        return float(round(ms))
    return float(round(ms, -1) if ms < 1000 else round(ms, -2))


def record(name: str, ms: float, ok: bool) -> None:
    key = (name if ok else f"{name} failed", int(time.time()))
    bucket = _timeline.setdefault(key, {})
    r = _round_ms(ms)
    bucket[r] = bucket.get(r, 0) + 1


@events.report_to_master.add_listener
def _report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    data["agentia"] = Tally.snapshot()
    data["agentia_timeline"] = [[name, sec, [[ms, n] for ms, n in h.items()]]
                                for (name, sec), h in _timeline.items()]
    _timeline.clear()


@events.worker_report.add_listener
def _worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    if "agentia" in data:
        _remote[client_id] = data["agentia"]
    for name, sec, pairs in data.get("agentia_timeline", ()):
        bucket = _timeline.setdefault((name, int(sec)), {})
        for ms, n in pairs:
            bucket[ms] = bucket.get(ms, 0) + n


def totals(environment: Environment) -> dict[str, int]:
    """The counters over all processes (on the master) or of this process (standalone)."""
    if isinstance(environment.runner, MasterRunner):
        out = dict.fromkeys(Tally.snapshot(), 0)
        for snap in _remote.values():
            for k, v in snap.items():
                out[k] = out.get(k, 0) + v
        return out
    return Tally.snapshot()


def _csv_prefix(environment: Environment) -> str | None:
    opts = environment.parsed_options
    return getattr(opts, "csv_prefix", None) if opts is not None else None


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or not _csv_prefix(environment):
        return
    prefix = _csv_prefix(environment)

    def writer() -> None:
        with open(f"{prefix}_agentia.csv", "w", newline="") as f:
            w = csv.writer(f)
            keys = list(Tally.snapshot())
            w.writerow(["timestamp", "users", *keys])
            while True:
                runner = environment.runner
                users = runner.user_count if runner is not None else 0
                t = totals(environment)
                w.writerow([f"{time.time():.3f}", users, *(t[k] for k in keys)])
                f.flush()
                gevent.sleep(1.0)

    gevent.spawn(writer)


class GCPauses:
    """Full (generation 2) garbage collections in this process: a load generator's own pauses
    would show up as latency it attributes to the server, so they are logged at the end."""

    count = 0
    total_ms = max_ms = 0.0
    _t0 = 0.0

    @classmethod
    def callback(cls, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            cls._t0 = time.perf_counter()
        else:
            ms = (time.perf_counter() - cls._t0) * 1000
            cls.count += 1
            cls.total_ms += ms
            cls.max_ms = max(cls.max_ms, ms)


gc.callbacks.append(GCPauses.callback)


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    logging.getLogger("agentia.load").info(
        "pid %d: %d full GC pauses, max %.1f ms, total %.1f ms", os.getpid(), GCPauses.count,
        GCPauses.max_ms, GCPauses.total_ms)
    prefix = _csv_prefix(environment)
    if isinstance(environment.runner, WorkerRunner) or not prefix:
        return
    hist = {f"{e.method} {e.name}": {str(k): v for k, v in sorted(e.response_times.items())}
            for e in environment.stats.entries.values()}
    timeline: dict[str, dict[str, dict[str, int]]] = {}
    for (name, sec), h in sorted(_timeline.items()):
        timeline.setdefault(name, {})[str(sec)] = {str(ms): n for ms, n in sorted(h.items())}
    with open(f"{prefix}_response_times.json", "wb") as f:
        f.write(orjson.dumps({"response_times_ms": hist, "counters": totals(environment),
                              "per_second": timeline}))


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
            if op == OP_TEXT and b'"pong"' in payload[:40]:
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
                conn.sock.send(encode_frame(OP_TEXT, PING_PAYLOAD))
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


# ------------------------------------------------------------------ ChatUser


class Turn:
    __slots__ = ("cid", "done", "first", "offset", "t0")

    def __init__(self, cid: str) -> None:
        self.cid = cid
        self.t0 = time.perf_counter()
        self.offset: int | None = None
        self.first = False
        self.done = gevent.event.Event()


class ChatUser(AgentiaWSUser):
    """One connection (its own user and session) sending turns at a steady pace."""

    abstract = False

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        users = max(1, int(self.opts.ws_chat_users))
        self.interval = users / max(0.01, float(self.opts.ws_turn_rate))
        turns = int(self.opts.ws_turns)
        self.quota = math.ceil(turns / users) if turns > 0 else -1
        self.conn: WSConnection | None = None
        self.reader: gevent.Greenlet | None = None
        self.turn: Turn | None = None
        self.early: dict[int, list[tuple[str, float, dict[str, Any]]]] = {}
        self.send_lock = gevent.lock.Semaphore()
        self.last_start = 0.0

    def wait_time(self) -> float:
        return max(0.0, self.interval - (time.perf_counter() - self.last_start))

    def on_start(self) -> None:
        gevent.sleep(random.uniform(0, min(self.interval, 2.0)))  # spread the users' phases
        self._connect()

    def _connect(self) -> bool:
        conn = self.connect(f"chat-{self.uid}")
        if conn is None:
            return False
        self.conn = conn
        self.early.clear()
        conn.sock.settimeout(float(self.opts.ws_heartbeat))
        self.reader = gevent.spawn(self._read, conn)
        return True

    def _send(self, frame: dict[str, Any]) -> None:
        assert self.conn is not None
        with self.send_lock:
            self.conn.sock.sendall(encode_frame(OP_TEXT, orjson.dumps(frame)))

    def _read(self, conn: WSConnection) -> None:
        while True:
            try:
                _, payload = conn.recv()
            except TimeoutError:
                with contextlib.suppress(OSError):
                    self._send({"type": "ping"})
                continue
            except Exception as exc:
                self._closed(conn, describe(exc))
                return
            try:
                frame = orjson.loads(payload)
                self._on_frame(frame, time.perf_counter())
            except Exception as exc:  # a malformed frame is the server's failure, not ours
                fire(self.environment, "frame", time.perf_counter(), exc=exc, ms=0)

    def _closed(self, conn: WSConnection, exc: WSError) -> None:
        if self.conn is conn:
            self.conn = None
            Tally.open -= 1
            Tally.dropped += 1
            fire(self.environment, "drop", time.perf_counter(), exc=exc, ms=0)
            turn = self.turn
            if turn is not None and not turn.done.is_set():
                self._fail(turn, "ack" if turn.offset is None else "full_turn", exc)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _fail(self, turn: Turn, stage: str, exc: BaseException) -> None:
        fire(self.environment, stage, turn.t0, exc=exc)
        Tally.turns_failed += 1
        Tally.turns_done += 1
        turn.done.set()

    def _on_frame(self, f: dict[str, Any], now: float) -> None:
        kind, turn = f.get("type"), self.turn
        if turn is None or turn.done.is_set():
            return
        if kind == "ack" and f.get("id") == turn.cid:
            turn.offset = int(f["offset"])
            fire(self.environment, "ack", turn.t0, ms=(now - turn.t0) * 1000)
            for k, t, ev in self.early.pop(turn.offset, []):
                self._event(turn, k, t, ev)
        elif kind == "error" and f.get("ref") == turn.cid:
            self._fail(turn, "ack", WSError(f"error {f.get('code')}"))
        elif kind in ("delta", "reply", "turn_error", "cancelled") and "turn" in f:
            if turn.offset is None:  # the ack and the first events may cross
                self.early.setdefault(int(f["turn"]), []).append((kind, now, f))
            elif f["turn"] == turn.offset:
                self._event(turn, kind, now, f)

    def _event(self, turn: Turn, kind: str, now: float, f: dict[str, Any]) -> None:
        if turn.done.is_set():
            return
        if kind in ("delta", "reply") and not turn.first:
            turn.first = True
            fire(self.environment, "first_delta", turn.t0, len(f.get("text", "")),
                 ms=(now - turn.t0) * 1000)
        if kind == "reply":
            fire(self.environment, "full_turn", turn.t0, len(f.get("text", "")),
                 ms=(now - turn.t0) * 1000)
            Tally.turns_done += 1
            turn.done.set()
        elif kind == "turn_error":
            self._fail(turn, "full_turn", WSError(f"turn_error {f.get('code')}"))
        elif kind == "cancelled":
            self._fail(turn, "full_turn", WSError("cancelled"))

    @task
    def chat(self) -> None:
        self.last_start = time.perf_counter()
        over = time.monotonic() - Tally.started_at > float(self.opts.ws_seconds)
        if self.quota == 0 or over:
            gevent.sleep(1.0)  # done sending: keep the connection, the shape stops the run
            return
        if self.conn is None and not self._connect():
            return
        if self.quota > 0:
            self.quota -= 1
        turn = Turn(f"{self.uid}-{self.n}")
        self.n += 1
        self.turn = turn
        Tally.turns_started += 1
        try:
            self._send({"type": "send", "id": turn.cid, "text": self.opts.ws_text})
        except OSError as exc:
            self._fail(turn, "ack", exc)
            return
        if not turn.done.wait(float(self.opts.ws_turn_timeout)):
            self._fail(turn, "ack" if turn.offset is None else "full_turn", WSError("timeout"))

    def on_stop(self) -> None:
        conn, self.conn = self.conn, None
        if self.reader is not None:
            self.reader.kill(block=False)
        if conn is not None:
            Tally.open -= 1
            conn.close(1000)
