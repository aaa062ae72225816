"""A raw WebSocket client that can write any frame, valid or not (RFC 6455 section 5).

The libraries' clients refuse to send what an attacker would: RSV bits, bad opcodes,
unmasked or fragmented control frames, a new message in the middle of a fragmented one.
This one writes bytes as told and reads what the server answers, frame by frame: the asyncio
adapter of :mod:`loadtest.wsframe` (which encodes and parses).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from loadtest.wsframe import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    accept,
    close_code,
    close_payload,
    frame,
    parse,
    response_head,
    upgrade_key,
    upgrade_request,
)

__all__ = ["BINARY", "CLOSE", "CONT", "PING", "PONG", "TEXT", "Frame", "HandshakeRefused",
           "Wire", "close_payload", "frame"]


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame from the server (never masked, never fragmented by either edge transport)."""

    opcode: int
    payload: bytes
    fin: bool = True

    @property
    def close_code(self) -> int | None:
        return close_code(self.payload) if self.opcode == CLOSE else None


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
        self.buf = b""  # read, not yet parsed

    @classmethod
    async def connect(cls, host: str, port: int, token: str, *, session: str | None = None,
                      path: str = "/v1/ws", limit: int = 1 << 22) -> Wire:
        reader, writer = await asyncio.open_connection(host, port, limit=limit)
        key = upgrade_key()
        query = f"?session={session}" if session else ""
        writer.write(upgrade_request(f"{path}{query}", key, [
            f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
            "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: agentia.v1",
            f"Authorization: Bearer {token}"]))
        head = await reader.readuntil(b"\r\n\r\n")
        status, headers = response_head(head[:-4])
        if status != 101 or headers.get("sec-websocket-accept") != accept(key):
            writer.close()
            raise HandshakeRefused(status or 0, head)
        return cls(reader, writer)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read(self) -> Frame | None:
        while (got := parse(self.buf, masked_ok=True)) is None:
            try:
                chunk = await self.reader.read(65536)
            except ConnectionError:
                return None
            if not chunk:
                return None
            self.buf += chunk
        b0, payload, end = got
        self.buf = self.buf[end:]
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
