"""A gevent-friendly ``agentia.v1`` WebSocket connection on a raw socket, for Locust.

Nothing here depends on a WebSocket library: the opening handshake is a hand-written
HTTP/1.1 Upgrade on a raw socket (status 101, ``Upgrade``/``Connection`` and
``Sec-WebSocket-Accept`` checked), client frames are masked and server frames parsed (text,
binary, continuation, ping/pong, close with its code) by :mod:`loadtest.wsframe`: this is its
gevent adapter. That keeps a held connection under 1 KiB in the Locust process (0.9 KiB
measured at 20,000), where ``websocket-client`` costs ~13 KiB and one User (greenlet) per
connection. IPv4 only. Runs only inside Locust's processes (gevent's monkey-patched sockets).
"""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import Any
from urllib.parse import quote

import gevent
import orjson

from loadtest.wsframe import (
    BINARY,
    CLOSE,
    MAX_HEAD,
    MAX_MESSAGE,
    PING,
    PONG,
    TEXT,
    FrameError,
    Messages,
    accept,
    close_code,
    close_payload,
    frame,
    parse,
    response_head,
    upgrade_key,
    upgrade_request,
)

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h


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


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    return frame(CLOSE, close_payload(code, reason.encode()[:120]))


class WSConnection:
    """One client connection: the socket and an incremental frame parser.

    ``open()`` is cooperative (gevent) and blocking for the calling greenlet. Afterwards the
    connection is used either from a reader greenlet (:meth:`recv`, ChatUser) or, switched to
    non-blocking with :meth:`watch`, from an io watcher callback in the hub (HoldUser).
    """

    __slots__ = ("buf", "messages", "ping_at", "sock", "tag", "watcher")

    def __init__(self, sock: socket.socket, rest: bytes = b"") -> None:
        self.sock = sock
        self.buf = rest
        self.messages = Messages()
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
            key = upgrade_key()
            sock.sendall(upgrade_request(path, key, headers))
            rest = cls._read_upgrade(sock, key)
            conn = cls(sock, rest)
            op, payload = conn.recv()
            welcome = orjson.loads(payload)
            if op != TEXT or welcome.get("type") != "welcome":
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
            if len(data) > MAX_HEAD:
                raise WSError("bad response")
        head, rest = data.split(b"\r\n\r\n", 1)
        status, hdrs = response_head(head)
        if status is None:
            raise WSError("bad response")
        if status != 101:
            raise WSError(f"HTTP {status}")
        if hdrs.get("sec-websocket-accept") != accept(key):
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
        if op == PING:
            with contextlib.suppress(OSError):
                self.sock.send(frame(PONG, payload))
        elif op == CLOSE:
            code = close_code(payload)
            with contextlib.suppress(OSError):
                self.sock.send(close_frame(code if code != 1005 else 1000))
            return WSError(f"close {code}", code)
        return None

    def next_frame(self) -> tuple[int, bytes] | None:
        """The next complete message or control frame in the buffer (consumed), or None."""
        while True:
            try:
                got = parse(self.buf, limit=MAX_MESSAGE)
                if got is None:
                    return None
                b0, payload, end = got
                self.buf = self.buf[end:]
                msg = self.messages.add(b0, payload)
            except FrameError as exc:
                raise WSError(str(exc), exc.code) from None
            if msg is not None:
                return msg

    # -- blocking use (a reader greenlet)

    def recv(self) -> tuple[int, bytes]:
        """The next data message; answers pings; raises WSError('close <code>') on close."""
        while True:
            got = self.next_frame()
            if got is None:
                data = self.sock.recv(65536)
                if not data:
                    raise WSError("close 1006", 1006)
                self.buf += data
                continue
            op, payload = got
            if op == PING:
                self.sock.sendall(frame(PONG, payload))
            elif op == CLOSE:
                code = close_code(payload)
                with contextlib.suppress(OSError):
                    self.sock.sendall(close_frame(code if code != 1005 else 1000))
                raise WSError(f"close {code}", code)
            elif op in (TEXT, BINARY):
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
