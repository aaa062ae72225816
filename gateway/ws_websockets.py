"""The ``websockets`` (16.x) implementation of the edge's transport and handshake."""

from __future__ import annotations

import asyncio
import http
import logging
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from agentia import PROTOCOL
from agentia.logs import bind
from gateway.connection import Connection
from gateway.transport import cap_send_buffer, reset_on_close

if TYPE_CHECKING:
    from gateway.node import EdgeNode

log = logging.getLogger("agentia.edge")
PATH = "/v1/ws"
_REJECT_503 = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nConnection: close\r\n"
               b"Content-Length: 13\r\n\r\nover capacity")


class WebsocketsTransport:
    __slots__ = ("ws",)

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws

    async def send(self, frame: bytes) -> None:
        await self.ws.send(frame, text=True)

    def send_now(self, frame: bytes) -> bool:
        return False  # websockets' send is a coroutine: the writer task does it

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)

    def abort(self) -> None:
        reset_on_close(self.ws.transport)
        self.ws.transport.abort()


class EdgeServerConnection(ServerConnection):
    """Refuses sockets beyond the hard cap before reading anything; counts failed handshakes
    instead of logging a traceback for each."""

    agentia: Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        node: EdgeNode = self.server.agentia_node  # type: ignore[attr-defined]
        cap_send_buffer(transport, node.settings.send_buffer_bytes)

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        node: EdgeNode = self.server.agentia_node  # type: ignore[attr-defined]
        if len(self.server.handlers) > node.hard_cap:
            node.metrics["refused_over_cap"] += 1
            self.transport.write(_REJECT_503)
            return
        try:
            await super().handshake(*args, **kwargs)
        except Exception as exc:
            # Peers that connect and send no valid request (scanners, TCP health checks,
            # clients that give up) are counted, not logged with a traceback each: the
            # library aborts the socket once it sees the handshake did not open.
            node.metrics["handshake_failed"] += 1
            log.debug("opening handshake failed: %s", exc)
        finally:
            # admitted by process_request, but the upgrade itself failed or timed out
            if self.agentia is not None and self.protocol.state is not State.OPEN:
                await node.forget(self.agentia)


def _select_subprotocol(conn: ServerConnection, offered: Any) -> Any:
    if PROTOCOL in offered:
        return PROTOCOL
    return None


def _healthz(conn: ServerConnection, node: EdgeNode) -> Response:
    return conn.respond(http.HTTPStatus.OK, "ok\n")


_PROBES = {"/healthz": _healthz}
"""The only plain-HTTP path of the public port; /readyz and /metrics: gateway/internal.py."""


async def _process_request(conn: ServerConnection, req: Request) -> Response | None:
    node: EdgeNode = conn.server.agentia_node  # type: ignore[attr-defined]
    url = urlsplit(req.path)
    if url.path in _PROBES:
        return _PROBES[url.path](conn, node)
    if url.path != PATH:
        return conn.respond(http.HTTPStatus.NOT_FOUND, f"WebSocket endpoint is {PATH}\n")
    headers = {k.lower(): v for k, v in req.headers.raw_items()}
    query = parse_qs(url.query)
    result = node.admit(headers, url.query, query.get("session", [None])[0])
    if isinstance(result, tuple):
        status, text = result
        resp = conn.respond(status, text + "\n")
        if status in (401, 503):
            resp.headers["Retry-After" if status == 503 else "WWW-Authenticate"] = (
                "5" if status == 503 else 'Bearer realm="agentia"')
        return resp
    conn.agentia = result  # type: ignore[attr-defined]
    return None


async def _handler(ws: ServerConnection) -> None:
    conn: Connection | None = getattr(ws, "agentia", None)
    if conn is None:
        return
    node = conn.node
    bind(conn=ws.id.hex[:12], session=conn.state.session, user=conn.state.user)
    conn.attach(WebsocketsTransport(ws))
    try:
        refused = await node.open(conn)
        if refused is not None:
            await ws.close(*refused)
            return
        async for message in ws:
            await conn.on_frame(message)
            if conn.closed:
                break
        if conn.closer is not None:
            await conn.closer  # our close code goes out before the library's default close
    except ConnectionClosed:
        pass
    finally:
        conn.closed = True
        await node.forget(conn)


async def start(node: EdgeNode, sock: socket.socket | None = None) -> Server:
    s = node.settings
    where: dict[str, Any] = (
        {"sock": sock} if sock else {"host": s.host, "port": s.port, "reuse_port": s.reuse_port,
                                     "backlog": s.backlog})
    server = await serve(
        _handler,
        process_request=_process_request,
        select_subprotocol=_select_subprotocol,
        compression="deflate" if s.compression else None,
        open_timeout=s.handshake_timeout_s,
        ping_interval=s.ws_ping_interval_s or None,
        ping_timeout=s.ws_ping_interval_s or None,
        close_timeout=2,
        max_size=s.max_frame_bytes,
        max_queue=4,
        write_limit=32 * 1024,
        create_connection=EdgeServerConnection,
        logger=logging.getLogger("agentia.ws"),
        server_header=None,
        **where,
    )
    server.agentia_node = node  # type: ignore[attr-defined]
    return server


async def close_server(server: Server, deadline: float) -> None:
    server.close(close_connections=False)
    try:
        await asyncio.wait_for(server.wait_closed(), deadline)
    except TimeoutError:
        log.warning("connections still open after the drain deadline; aborting them")
