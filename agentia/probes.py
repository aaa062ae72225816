"""A process's internal HTTP port: ``/healthz``, ``/readyz`` and ``/metrics``.

Probes and Prometheus read these; clients never should (the metrics tell an attacker the load
and the error mix, ``/readyz`` when to strike), so it listens on an internal address of its
own. One request per connection, plain HTTP/1.1, bounded in size, time and concurrent
connections. Each process kind says what "ready" means (a :data:`Readiness`): the edge
(gateway/internal.py), the worker (sessions/probes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from agentia import metrics as M

log = logging.getLogger("agentia.probes")
MAX_REQUEST_BYTES = 8192
"""Request line and headers; a longer request is dropped unanswered."""
READ_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 64
"""Concurrent connections; more are closed at once (scrapers and probes need a handful)."""
TEXT = "text/plain; charset=utf-8"

Readiness = Callable[[], Awaitable[tuple[int, str]]]
"""``/readyz``'s (status, text); it must answer within ``READ_TIMEOUT_S``."""


async def answer(ready: Readiness, method: str, path: str) -> tuple[int, str, bytes]:
    """(status, content type, body) for one request."""
    if method not in ("GET", "HEAD"):
        return 405, TEXT, b"method not allowed\n"
    path = path.split("?", 1)[0]
    if path == "/healthz":
        return 200, TEXT, b"ok\n"
    if path == "/readyz":
        status, text = await ready()
        return status, TEXT, text.encode()
    if path == "/metrics":
        body, ctype = M.exposition()
        return 200, ctype, body
    return 404, TEXT, b"not found: /healthz, /readyz, /metrics\n"


def response(status: int, ctype: str, body: bytes, head_only: bool = False) -> bytes:
    reason = HTTPStatus(status).phrase
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head if head_only else head + body


class ProbeServer:
    """The listening socket and its connections (counted, so a flood cannot pile them up)."""

    def __init__(self, ready: Readiness, host: str, port: int, reuse_port: bool = False) -> None:
        self.ready = ready
        self.host, self.wanted_port, self.reuse_port = host, port, reuse_port
        self.open = 0
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.sockets
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> ProbeServer:
        self.server = await asyncio.start_server(
            self._serve, self.host, self.wanted_port, reuse_port=self.reuse_port,
            limit=MAX_REQUEST_BYTES)
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            if self.open <= MAX_CONNECTIONS:
                await self._one(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, UnicodeDecodeError, ValueError) as exc:
            log.debug("internal port: request dropped: %s", exc)
        finally:
            self.open -= 1
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(READ_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0].decode("ascii").split()
        if len(line) != 3 or not line[2].startswith("HTTP/1."):
            writer.write(response(400, TEXT, b"bad request\n"))
        else:
            async with asyncio.timeout(READ_TIMEOUT_S):
                status, ctype, body = await answer(self.ready, line[0], line[1])
            writer.write(response(status, ctype, body, head_only=line[0] == "HEAD"))
        async with asyncio.timeout(READ_TIMEOUT_S):
            await writer.drain()
