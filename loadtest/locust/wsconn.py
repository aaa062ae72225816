"""A gevent-friendly ``agentia.v1`` WebSocket connection on a raw socket, for Locust.

Nothing here depends on a WebSocket library: the opening handshake is a hand-written
HTTP/1.1 Upgrade on a raw socket (status 101, ``Upgrade``/``Connection`` and
``Sec-WebSocket-Accept`` checked), client frames are masked, server frames are parsed here
(text, binary, continuation, ping/pong, close with its code). That keeps a held connection
under 1 KiB in the Locust process (0.9 KiB measured at 20,000), where ``websocket-client``
costs ~13 KiB and one User (greenlet) per connection. IPv4 only. Runs only inside Locust's
processes (gevent's monkey-patched sockets).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import random
import socket
import struct
from typing import Any
from urllib.parse import quote

import gevent
import orjson

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
