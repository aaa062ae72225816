"""A small asyncio WebSocket client (RFC 6455) used for every server in the peer benchmark.

One :class:`WSClient` per connection, an ``asyncio.Protocol`` (no task, no stream objects),
so that a client process holds ~12,000 connections cheaply and, above all, treats every server
alike: the opening handshake is a hand-written HTTP/1.1 Upgrade, server frames are parsed
here, client frames are masked. What a server says inside its messages is the adapter's
business (:mod:`loadtest.peer.adapters`). IPv4 only; no extensions (no compression).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
import time
from typing import Any, Protocol, cast

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 1 << 20


class Adapter(Protocol):
    """A server's protocol on top of WebSocket messages."""

    def request(self, idx: int) -> tuple[str, list[str]]:
        """(path with query, extra request headers) of connection ``idx``."""

    def on_open(self, conn: WSClient) -> None:
        """The upgrade succeeded: send what the protocol asks first (if anything)."""

    def on_message(self, conn: WSClient, payload: bytes) -> None:
        """A text or binary message from the server."""


def mask(payload: bytes) -> tuple[bytes, bytes]:
    key = os.urandom(4)
    n = len(payload)
    if not n:
        return key, payload
    stream = (key * (n // 4 + 1))[:n]
    return key, (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(
        n, "big")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key, body = mask(payload)
    return head + key + body


class WSClient(asyncio.Protocol):
    """One connection. ``ready`` resolves (True) when the adapter calls :meth:`mark_ready`,
    or with an exception on a refused upgrade or an early close; ``closed`` tells a held
    connection was dropped."""

    __slots__ = ("_host", "adapter", "buf", "closed", "frag", "idx", "key", "ready",
                 "started", "state", "transport", "upgraded")

    def __init__(self, adapter: Adapter, idx: int, host: str) -> None:
        self.adapter = adapter
        self.idx = idx
        self.key = base64.b64encode(os.urandom(16))
        self.buf = b""
        self.frag: list[bytes] | None = None
        self.upgraded = False
        self.closed = False
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.started = time.perf_counter()
        self.state: Any = None
        """The adapter's per-connection state."""
        self._host = host

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check
        self.transport = cast(asyncio.Transport, transport)
        path, extra = self.adapter.request(self.idx)
        lines = [f"GET {path} HTTP/1.1", f"Host: {self._host}", "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                 f"Sec-WebSocket-Key: {self.key.decode()}", *extra]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            if not self.upgraded and not self._upgrade():
                return
            self._frames()
        except ValueError as exc:
            self.fail(str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))

    # -- used by adapters and the process

    def send_text(self, payload: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(encode_frame(OP_TEXT, payload))

    def mark_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(True)

    def fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        self.abort()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(encode_frame(OP_CLOSE, struct.pack("!H", 1000)))
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- parsing

    def _upgrade(self) -> bool:
        if b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 16384:
                raise ValueError("bad response")
            return False
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            raise ValueError(f"HTTP {status[1] if len(status) > 1 else '?'}")
        hdrs = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            hdrs[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1(self.key + GUID).digest()).decode()
        if hdrs.get("sec-websocket-accept") != accept:
            raise ValueError("bad Sec-WebSocket-Accept")
        self.upgraded = True
        self.adapter.on_open(self)
        return True

    def _frames(self) -> None:
        buf, pos, n = self.buf, 0, len(self.buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            size, head = b1 & 0x7F, 2
            if b1 & 0x80:
                raise ValueError("masked server frame")
            if size == 126:
                if n - pos < 4:
                    break
                size, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif size == 127:
                if n - pos < 10:
                    break
                size, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if size > MAX_MESSAGE:
                raise ValueError("message too big")
            if n - pos < head + size:
                break
            payload = buf[pos + head:pos + head + size]
            pos += head + size
            self._frame(b0, payload)
        self.buf = buf[pos:]

    def _frame(self, b0: int, payload: bytes) -> None:
        op = b0 & 0x0F
        if op == OP_PING:
            assert self.transport is not None
            self.transport.write(encode_frame(OP_PONG, payload))
        elif op == OP_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.fail(f"close {code}")
        elif op in (OP_TEXT, OP_BINARY):
            if b0 & 0x80:
                self.adapter.on_message(self, payload)
            else:
                self.frag = [payload]
        elif op == OP_CONT and self.frag is not None:
            self.frag.append(payload)
            if b0 & 0x80:
                msg, self.frag = b"".join(self.frag), None
                self.adapter.on_message(self, msg)
