"""The ``picows`` implementation of the edge's transport and handshake.

picows is a Cython WebSocket library driven by callbacks instead of one task per connection.
The edge keeps the same behaviour as with ``websockets`` (the e2e suite runs over both):

* the upgrade is decided synchronously by :meth:`EdgeNode.admit` (token, caps, session id);
  picows sends the 101 or the refusal itself; the session is opened after the upgrade by
  :meth:`EdgeNode.open`, as with ``websockets``;
* an idle connection holds no task: a reader task exists only while inbound frames wait to be
  handled (frames are handled in order, one at a time, as the ``websockets`` read loop does),
  and reading is paused while more than ``_INBOX_HIGH`` frames wait (backpressure to a client
  that sends faster than Redis answers);
* writes go straight into the socket's buffer; ``send`` waits only while the kernel buffer is
  full (``pause_writing``), which is what makes the outbox fill for a slow reader;
* fragmented messages are reassembled up to ``max_frame_bytes``; larger ones close with 1009;
  what picows lets through against RFC 6455 is closed here: RSV bits set or a new message
  before the last one ended (1002), a text message that is not UTF-8 (1007).
* PINGs are answered here (picows' auto-pong is off), within the connection's ping allowance,
  and the pongs count against its send budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, cast

from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in its stubs

from agentia.logs import bind, quiet_library
from gateway import routing as R
from gateway.connection import Connection
from gateway.corked import CORK, HOLD_MAX, framed, send_one
from gateway.transport import Served, cap_send_buffer, port_of, reset_on_close

if TYPE_CHECKING:
    from gateway.node import EdgeNode

log = logging.getLogger("agentia.edge")
_INBOX_HIGH = 16
_INBOX_LOW = 4
_CLOSE_WAIT_S = 2.0


class PicowsConnection(WSListener):
    """Listener of one upgraded socket and the :class:`Transport` its Connection writes to."""

    node: ClassVar[EdgeNode]
    """Set on the subclass made for each server (see ``listener_factory``)."""

    __slots__ = ("conn", "corked", "corked_bytes", "fragments", "gone", "inbox", "opened",
                 "paused_reading", "reader", "t", "text", "writable")

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn
        self.t: WSTransport | None = None
        self.inbox: deque[bytes] | None = None  # allocated while frames wait
        self.reader: asyncio.Task[None] | None = None
        self.opened = False
        self.gone = False
        self.paused_reading = False
        self.writable: asyncio.Future[None] | None = None
        self.fragments: bytearray | None = None
        self.text = False  # the message being reassembled is text (UTF-8 checked when whole)
        self.corked: list[bytes] | None = None
        """Frames written in this pass of the loop, not yet on the socket (gateway/corked.py)."""
        self.corked_bytes = 0

    # ------------------------------------------------------------ picows callbacks

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.t = transport
        self.conn.attach(self)
        self.reader = asyncio.get_running_loop().create_task(self._open_then_read())

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            # picows passes RSV bits through; no extension is negotiated (RFC 6455 5.2)
            self._protocol_error(WSCloseCode.PROTOCOL_ERROR, "reserved bits must be 0")
        elif kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            if self.fragments is not None:
                # picows would start the new message and drop the unfinished one (RFC 5.4)
                self._protocol_error(WSCloseCode.PROTOCOL_ERROR, "expected a continuation frame")
            elif frame.fin:
                self._message(kind, frame.get_payload_as_bytes())
            else:
                self.fragments = bytearray(frame.get_payload_as_memoryview())
                self.text = kind is WSMsgType.TEXT
        elif kind is WSMsgType.CONTINUATION:
            if self.fragments is None:
                self._protocol_error(WSCloseCode.PROTOCOL_ERROR, "continuation without a start")
                return
            self.fragments += frame.get_payload_as_memoryview()
            if len(self.fragments) > self.node.settings.max_frame_bytes:
                self.fragments = None
                self._protocol_error(WSCloseCode.MESSAGE_TOO_BIG, "message too big")
            elif frame.fin:
                data, self.fragments = bytes(self.fragments), None
                self._message(WSMsgType.TEXT if self.text else WSMsgType.BINARY, data)
        elif kind is WSMsgType.PING:
            # answered here, not by picows (auto-pong off): within the ping allowance and
            # counted against the send budget, since a client that does not read makes the
            # pongs pile up in the write buffer
            if self.conn.on_ws_ping():
                self.flush()
                transport.send_pong(frame.get_payload_as_bytes())
                self.conn.check_budget()
            else:
                self._stop_reading()
        elif kind is WSMsgType.CLOSE:
            # The peer closes (or answers our close): echo its code once, then hang up.
            if not transport.is_close_frame_sent:
                self.flush()
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        # PONG needs nothing.

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.gone = True
        self.conn.mark_closed()
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        if self.reader is None:
            self.node.spawn(self.node.forget(self.conn))
        # else the reader forgets the connection when it has finished what it was doing

    def pause_writing(self) -> None:
        if self.writable is None or self.writable.done():
            self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.conn.wake()

    # ------------------------------------------------------------ reading

    def _message(self, kind: WSMsgType, data: bytes) -> None:
        """A whole message: a text one must be UTF-8 (RFC 6455 8.1; picows does not check)."""
        if kind is WSMsgType.TEXT and not data.isascii():
            try:
                data.decode()
            except UnicodeDecodeError:
                self._protocol_error(WSCloseCode.INVALID_TEXT, "invalid UTF-8 in a text message")
                return
        self._received(data)

    def _received(self, data: bytes) -> None:
        if self.conn.closed:
            self._stop_reading()  # closing: what else the client sends is not wanted
            return
        if self.inbox is None:
            self.inbox = deque()
        self.inbox.append(data)
        if len(self.inbox) > _INBOX_HIGH and not self.paused_reading and self.t is not None:
            self.paused_reading = True
            self.t.underlying_transport.pause_reading()
        if self.reader is None and self.opened:
            self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _open_then_read(self) -> None:
        conn = self.conn
        st = conn.state
        bind(conn=f"{id(self):x}", session=st.session, user=st.user)
        refused = await self.node.open(conn)
        if refused is not None:
            self.inbox = None
            await self.close(*refused)
            self.reader = None
            return
        self.opened = True
        await self._read()

    async def _read(self) -> None:
        conn = self.conn
        try:
            while self.inbox and not conn.closed:
                await conn.on_frame(self.inbox.popleft())
                if (self.paused_reading and self.t is not None and not conn.closed
                        and len(self.inbox or ()) <= _INBOX_LOW):
                    self.paused_reading = False
                    self.t.underlying_transport.resume_reading()
        finally:
            self.reader = None
            if not self.inbox:
                self.inbox = None
            if self.gone:
                await self.node.forget(conn)

    def _stop_reading(self) -> None:
        """Closing: read no more (the close handshake then times out and the socket is
        dropped), so a flooding client costs no more CPU or memory meanwhile."""
        if not self.paused_reading and self.t is not None:
            self.paused_reading = True
            self.t.underlying_transport.pause_reading()

    def _protocol_error(self, code: WSCloseCode, reason: str) -> None:
        self.conn.mark_closed()
        self.inbox = None
        if self.t is not None and not self.t.is_close_frame_sent:  # once, whatever follows
            self.flush()
            self.t.send_close(code, reason.encode())
            self.t.disconnect()

    # ------------------------------------------------------------ Transport

    async def send(self, frame: bytes) -> None:
        if self.writable is not None and not self.writable.done():
            await self.writable
        if self.gone or self.t is None:
            raise ConnectionError("the peer is gone")
        self.flush()
        if not self.t.is_close_frame_sent:  # as picows does with a frame after the close
            send_one(self.t, frame)

    def send_now(self, frame: bytes) -> bool:
        """Take ``frame`` for this pass of the loop's write (gateway/corked.py)."""
        if self.gone or self.t is None or (self.writable is not None
                                            and not self.writable.done()):
            return False
        if self.corked is None:
            self.corked = [frame]
            CORK.hold(self)
        else:
            self.corked.append(frame)
        self.corked_bytes += len(frame)
        if self.corked_bytes >= HOLD_MAX:  # a burst: what is held goes now
            self.flush()
        return True

    def flush(self) -> None:
        """Write the frames taken in this pass of the loop, in one write."""
        frames, self.corked = self.corked, None
        if not frames:
            return
        self.corked_bytes = 0
        t = self.t
        if t is None or self.gone or t.is_close_frame_sent:
            return  # as picows does with a frame after the close
        try:
            if len(frames) == 1:
                send_one(t, frames[0])
            else:
                t.underlying_transport.write(framed(frames))
        except Exception:
            self.conn.mark_closed()  # the socket is going away: as a failed write would
        self.conn.wake()  # a paced replay waiting for the bytes to leave may go on

    def buffered(self) -> int:
        t = self.t
        return (t.underlying_transport.get_write_buffer_size() if t is not None else 0) \
            + self.corked_bytes

    async def close(self, code: int, reason: str) -> None:
        t = self.t
        if t is None or self.gone:
            return
        self.flush()
        t.send_close(code, reason.encode())  # type: ignore[arg-type]  # any valid code
        try:
            await asyncio.wait_for(asyncio.shield(t.wait_disconnected()), _CLOSE_WAIT_S)
        except (TimeoutError, Exception):
            t.disconnect(graceful=False)

    def abort(self) -> None:
        self.corked, self.corked_bytes = None, 0
        if self.t is not None:
            reset_on_close(self.t.underlying_transport)
            self.t.disconnect(graceful=False)


# ---------------------------------------------------------------- handshake


def _response(answer: R.Answer) -> WSUpgradeResponseWithListener:
    body = answer.body.encode()
    if answer.status < 400:
        resp = WSUpgradeResponse.create_ok_response(body)
        for k, v in answer.headers:
            resp.headers[k] = v
        return WSUpgradeResponseWithListener(resp, None)
    return WSUpgradeResponseWithListener(
        WSUpgradeResponse.create_error_response(answer.status, body, dict(answer.headers)),
        None)


def listener_factory(node: EdgeNode) -> Any:
    class Listener(PicowsConnection):
        __slots__ = ()

    Listener.node = node  # one class per server: no per-connection reference to the node

    def factory(req: WSUpgradeRequest) -> Any:
        h = req.headers
        headers = {name: h.get(name, "") for name in _ROUTED}
        decision = R.route(node, req.path.decode("latin-1"), headers,
                           h.getall("sec-websocket-protocol", ()))
        if isinstance(decision, R.Answer):
            return _response(decision)
        chosen = {"Sec-WebSocket-Protocol": decision.subprotocol} if decision.subprotocol \
            else None
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(chosen),
                                             Listener(decision.conn))

    return factory


_ROUTED = ("authorization", "origin", "user-agent", "sec-websocket-key", "upgrade", "connection",
           "sec-websocket-version")
"""The request headers the routing reads."""


_REJECT_503 = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nConnection: close\r\n"
               b"Content-Length: 13\r\n\r\nover capacity")


class _Refuse(asyncio.Protocol):
    """A socket beyond the hard cap: answered 503 at once, nothing read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        t.write(_REJECT_503)
        t.close()


async def start(node: EdgeNode, sock: socket.socket | None = None) -> Served:
    s = node.settings
    factory = listener_factory(node)
    if s.compression:
        log.warning("the picows transport does not offer permessage-deflate; compression is off")
    # picows builds its protocol inside ws_create_server; to count sockets (including those
    # mid-handshake, which hold fds too) we build the same server around a counting subclass.
    sockets = 0

    class Counted(WSProtocol):  # type: ignore[misc]
        __slots__ = ()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            nonlocal sockets
            sockets += 1
            cap_send_buffer(transport, s.send_buffer_bytes)
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            nonlocal sockets
            sockets -= 1
            super().connection_lost(exc)

    # picows logs what a client provokes (an oversize frame) at ERROR: quiet_library makes it
    # a WARNING, once a minute. Through an adapter, since picows gives each connection a child
    # of a Logger it is handed, and a logger's filters do not see its children's records.
    quiet_library("agentia.ws")
    logger = logging.LoggerAdapter(logging.getLogger("agentia.ws"), {})
    ping = s.ws_ping_interval_s or 20.0

    def protocol() -> asyncio.BaseProtocol:
        if sockets >= node.hard_cap:
            node.tally("refused_over_cap")
            return _Refuse()
        # the arguments picows.api.ws_create_server passes (picows 2.3), in its order:
        # (host+port, path, client side, listener factory, logger, disconnect on exception,
        #  handshake timeout, auto ping, ping idle timeout, ping reply timeout, strategy,
        #  auto pong, max frame size, extra headers, read buffer size). Auto pong is off:
        #  on_ws_frame answers PINGs within the ping allowance and the send budget.
        return Counted(None, None, False, factory, logger, True, s.handshake_timeout_s,
                       s.ws_ping_interval_s > 0, ping, ping, WSAutoPingStrategy.PING_WHEN_IDLE,
                       False, s.max_frame_bytes, None, 1024)

    where: dict[str, Any] = (
        {"sock": sock} if sock else {"host": s.host, "port": s.port, "reuse_port": s.reuse_port,
                                     "backlog": s.backlog})
    server = await asyncio.get_running_loop().create_server(protocol, **where)

    async def close(deadline: float) -> None:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), deadline)

    return Served(port_of(server.sockets, s.port), close)

