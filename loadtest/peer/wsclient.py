"""A small asyncio WebSocket client (RFC 6455) used for every server in the peer benchmark.

One :class:`WSClient` per connection, an ``asyncio.Protocol`` (no task, no stream objects),
so that a client process holds ~12,000 connections cheaply and, above all, treats every server
alike: the opening handshake is a hand-written HTTP/1.1 Upgrade, server frames are parsed
and client frames masked by :mod:`loadtest.wsframe`. What a server says inside its messages is
the adapter's business (:mod:`loadtest.peer.adapters`). IPv4 only; no extensions (no compression).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol, cast

from loadtest.wsframe import (
    BINARY,
    CLOSE,
    MAX_HEAD,
    MAX_MESSAGE,
    PING,
    PONG,
    TEXT,
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


class Adapter(Protocol):
    """A server's protocol on top of WebSocket messages."""

    def request(self, idx: int) -> tuple[str, list[str]]:
        """(path with query, extra request headers) of connection ``idx``."""

    def on_open(self, conn: WSClient) -> None:
        """The upgrade succeeded: send what the protocol asks first (if anything)."""

    def on_message(self, conn: WSClient, payload: bytes) -> None:
        """A text or binary message from the server."""


class WSClient(asyncio.Protocol):
    """One connection. ``ready`` resolves (True) when the adapter calls :meth:`mark_ready`,
    or with an exception on a refused upgrade or an early close; ``closed`` tells a held
    connection was dropped."""

    __slots__ = ("_host", "adapter", "buf", "closed", "idx", "key", "messages", "ready",
                 "started", "state", "transport", "upgraded")

    def __init__(self, adapter: Adapter, idx: int, host: str) -> None:
        self.adapter = adapter
        self.idx = idx
        self.key = upgrade_key()
        self.buf = b""
        self.messages = Messages()
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
        self.transport.write(upgrade_request(path, self.key, [
            f"Host: {self._host}", "Upgrade: websocket", "Connection: Upgrade",
            "Sec-WebSocket-Version: 13", *extra]))

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
            self.transport.write(frame(TEXT, payload))

    def mark_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(True)

    def fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        self.abort()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(frame(CLOSE, close_payload(1000)))
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- parsing

    def _upgrade(self) -> bool:
        if b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise ValueError("bad response")
            return False
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status, hdrs = response_head(head)
        if status != 101:
            raise ValueError(f"HTTP {status or '?'}")
        if hdrs.get("sec-websocket-accept") != accept(self.key):
            raise ValueError("bad Sec-WebSocket-Accept")
        self.upgraded = True
        self.adapter.on_open(self)
        return True

    def _frames(self) -> None:
        buf, pos = self.buf, 0
        while (got := parse(buf, pos, limit=MAX_MESSAGE)) is not None:
            b0, payload, pos = got
            msg = self.messages.add(b0, payload)
            if msg is not None:
                self._message(*msg)
        self.buf = buf[pos:]

    def _message(self, op: int, payload: bytes) -> None:
        if op == PING:
            assert self.transport is not None
            self.transport.write(frame(PONG, payload))
        elif op == CLOSE:
            self.fail(f"close {close_code(payload)}")
        elif op in (TEXT, BINARY):
            self.adapter.on_message(self, payload)
