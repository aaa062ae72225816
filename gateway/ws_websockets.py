"""The ``websockets`` (16.x) implementation of the edge's transport and handshake."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from agentia import PROTOCOL
from agentia.logs import bind, quiet_library
from gateway import routing as R
from gateway.connection import Connection
from gateway.transport import Served, cap_send_buffer, port_of, reset_on_close

if TYPE_CHECKING:
    from gateway.node import EdgeNode

log = logging.getLogger("agentia.edge")
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

    def buffered(self) -> int:
        t = self.ws.transport
        return t.get_write_buffer_size() if t is not None else 0

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)

    def abort(self) -> None:
        reset_on_close(self.ws.transport)
        self.ws.transport.abort()


class EdgeServerConnection(ServerConnection):
    """Refuses sockets beyond the hard cap before reading anything; counts failed handshakes
    instead of logging a traceback for each; holds WebSocket PINGs to the ping allowance and
    the pongs the library writes for them to the send budget."""

    agentia: Connection | None = None

    def process_event(self, event: Any) -> None:
        conn = self.agentia
        # the library has already queued the pong; over the allowance we close, and stop
        # reading so that no more pongs are written (the close then times out and aborts)
        if (conn is not None and isinstance(event, Frame) and event.opcode is Opcode.PING
                and self.protocol.state is State.OPEN and not conn.on_ws_ping()):
            self.transport.pause_reading()
        super().process_event(event)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        conn = self.agentia
        if conn is not None:
            conn.check_budget()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        node: EdgeNode = self.server.agentia_node  # type: ignore[attr-defined]
        cap_send_buffer(transport, node.settings.send_buffer_bytes)

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        node: EdgeNode = self.server.agentia_node  # type: ignore[attr-defined]
        if len(self.server.handlers) > node.hard_cap:
            node.tally("refused_over_cap")
            self.transport.write(_REJECT_503)
            return
        try:
            await super().handshake(*args, **kwargs)
        except Exception as exc:
            # Peers that connect and send no valid request (scanners, TCP health checks,
            # clients that give up) are counted, not logged with a traceback each: the
            # library aborts the socket once it sees the handshake did not open.
            node.tally("handshake_failed")
            log.debug("opening handshake failed: %s", exc)
        finally:
            # admitted by process_request, but the upgrade itself failed or timed out
            if self.agentia is not None and self.protocol.state is not State.OPEN:
                await node.forget(self.agentia)


def _select_subprotocol(conn: ServerConnection, offered: Any) -> Any:
    if PROTOCOL in offered:
        return PROTOCOL
    return None


async def _process_request(conn: ServerConnection, req: Request) -> Response | None:
    node: EdgeNode = conn.server.agentia_node  # type: ignore[attr-defined]
    h = req.headers
    # the last of repeated headers, as before (Headers.get raises on repeated ones)
    headers = {name: (h.get_all(name) or [""])[-1]
               for name in ("authorization", "origin", "user-agent")}
    # the library checks the upgrade itself after this (and answers 426/400)
    decision = R.route(node, req.path, headers, h.get_all("sec-websocket-protocol"),
                       check_upgrade=False)
    if isinstance(decision, R.Accept):
        conn.agentia = decision.conn  # type: ignore[attr-defined]
        return None
    resp = conn.respond(decision.status, decision.body)
    for name, value in decision.headers:
        resp.headers[name] = value
    return resp


async def _handler(ws: ServerConnection) -> None:
    conn: Connection | None = getattr(ws, "agentia", None)
    if conn is None:
        return
    node: EdgeNode = ws.server.agentia_node  # type: ignore[attr-defined]
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
        conn.mark_closed()
        await node.forget(conn)


async def start(node: EdgeNode, sock: socket.socket | None = None) -> Served:
    s = node.settings
    quiet_library("agentia.ws")
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
    return Served(port_of(server.sockets, s.port), lambda deadline: _close(server, deadline))


async def _close(server: Server, deadline: float) -> None:
    server.close(close_connections=False)
    try:
        await asyncio.wait_for(server.wait_closed(), deadline)
    except TimeoutError:
        log.warning("connections still open after the drain deadline; aborting them")
