"""The edge's internal HTTP port: ``/healthz``, ``/readyz`` and ``/metrics``.

Probes and Prometheus read these; clients never should (the metrics tell an attacker the load
and the error mix, ``/readyz`` when to strike), so the public port serves only ``/v1/ws`` and
``/healthz`` and this server listens on ``AGENTIA_INTERNAL_HOST:AGENTIA_INTERNAL_PORT``
(``127.0.0.1`` and the public port + 1000 by default). One request per connection, plain
HTTP/1.1, bounded in size, time and concurrent connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING

from agentia import metrics as M

if TYPE_CHECKING:
    from gateway.node import EdgeNode

log = logging.getLogger("agentia.edge")
MAX_REQUEST_BYTES = 8192
"""Request line and headers; a longer request is dropped unanswered."""
READ_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 64
"""Concurrent connections; more are closed at once (scrapers and probes need a handful)."""
_TEXT = "text/plain; charset=utf-8"


def readiness(node: EdgeNode) -> tuple[int, str]:
    """``/readyz``: stop routing new connections here while draining or Redis is unreachable."""
    if node.draining:
        return 503, "draining\n"
    if not node.redis_ok:
        return 503, "redis unreachable\n"
    return 200, "ready\n"


def answer(node: EdgeNode, method: str, path: str) -> tuple[int, str, bytes]:
    """(status, content type, body) for one request."""
    if method not in ("GET", "HEAD"):
        return 405, _TEXT, b"method not allowed\n"
    path = path.split("?", 1)[0]
    if path == "/healthz":
        return 200, _TEXT, b"ok\n"
    if path == "/readyz":
        status, text = readiness(node)
        return status, _TEXT, text.encode()
    if path == "/metrics":
        body, ctype = M.exposition()
        return 200, ctype, body
    return 404, _TEXT, b"not found: /healthz, /readyz, /metrics\n"


def response(status: int, ctype: str, body: bytes, head_only: bool = False) -> bytes:
    reason = HTTPStatus(status).phrase
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head if head_only else head + body


class InternalServer:
    """The listening socket and its connections (counted, so a flood cannot pile them up)."""

    def __init__(self, node: EdgeNode) -> None:
        self.node = node
        self.open = 0
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.sockets
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> InternalServer:
        s = self.node.settings
        self.server = await asyncio.start_server(
            functools.partial(InternalServer._serve, self), s.internal_host, s.internal_port,
            reuse_port=s.reuse_port, limit=MAX_REQUEST_BYTES)
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
            writer.write(response(400, _TEXT, b"bad request\n"))
        else:
            status, ctype, body = answer(self.node, line[0], line[1])
            writer.write(response(status, ctype, body, head_only=line[0] == "HEAD"))
        async with asyncio.timeout(READ_TIMEOUT_S):
            await writer.drain()
