"""A raw WebSocket client that can write any frame, valid or not (RFC 6455 section 5).

The libraries' clients refuse to send what an attacker would: RSV bits, bad opcodes,
unmasked or fragmented control frames, a new message in the middle of a fragmented one.
This one writes bytes as told and reads what the server answers, frame by frame.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import struct
from dataclasses import dataclass

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
          mask: bool = True, length: int | None = None) -> bytes:
    """One client frame. ``rsv`` is the 3 RSV bits (0-7); ``length`` overrides the declared
    payload length (to announce more than is sent)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0xF)])
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 1 << 16:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _xor(payload, key)


def _xor(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    k = (key * (len(data) // 4 + 1))[:len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(len(data), "big")


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame from the server (never masked, never fragmented by either edge transport)."""

    opcode: int
    payload: bytes
    fin: bool = True

    @property
    def close_code(self) -> int | None:
        if self.opcode != CLOSE:
            return None
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else 1005


class HandshakeRefused(Exception):
    def __init__(self, status: int, head: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.head = head


class Wire:
    """One raw connection: ``write`` bytes, ``read`` frames (None at EOF)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, token: str, *, session: str | None = None,
                      path: str = "/v1/ws", limit: int = 1 << 22) -> Wire:
        reader, writer = await asyncio.open_connection(host, port, limit=limit)
        key = base64.b64encode(os.urandom(16))
        query = f"?session={session}" if session else ""
        writer.write(
            f"GET {path}{query} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: agentia.v1\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            writer.close()
            raise HandshakeRefused(status, head)
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        if b"sec-websocket-accept: " + accept.lower() not in head.lower():
            writer.close()
            raise HandshakeRefused(status, head)
        return cls(reader, writer)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read(self) -> Frame | None:
        try:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            key = await self.reader.readexactly(4) if b1 & 0x80 else b""
            payload = await self.reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        if key:
            payload = _xor(payload, key)
        return Frame(b0 & 0xF, payload, bool(b0 & 0x80))

    def pause_reading(self) -> None:
        """Stop reading the socket (an attacker that never reads)."""
        transport = self.writer.transport
        if hasattr(transport, "pause_reading"):
            transport.pause_reading()

    def abort(self) -> None:
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            await asyncio.wait_for(self.writer.wait_closed(), 2)
