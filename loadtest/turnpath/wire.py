"""The bench's side of one WebSocket connection on picows: every text frame handed to a
callback as picows parses it (no task, no queue, no Python frame parser per frame), so the
load generator costs the cores it shares with what it measures as little as it can. It
measured 0.5 CPU-ms per turn with python-websockets (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect


class Closed(ConnectionError):
    """A send on a connection that is gone."""


class PicowsWs(WSListener):
    """What :class:`loadtest.turnpath.clients.Client` needs of a connection: ``send``,
    ``listen`` (frames to a callback until it closes), ``close`` and ``close_code`` (the
    peer's, None when it did not close with one)."""

    def __init__(self) -> None:
        self.transport: WSTransport | None = None
        self.close_code: int | None = None
        self.feed: Callable[[bytes], None] | None = None
        self.early: list[bytes] = []
        """Frames before :meth:`listen` (the welcome), at most the first few."""
        self.first = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT:
            raw = frame.get_payload_as_bytes()
            if self.feed is not None:
                self.feed(raw)
            elif not self.first.done():
                self.first.set_result(raw)
            elif len(self.early) < 100:
                self.early.append(raw)
        elif kind == WSMsgType.CLOSE:
            code = frame.get_close_code()
            self.close_code = code.value
            transport.send_close(code)
            transport.disconnect()
        elif kind == WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.first.done():
            self.first.set_exception(Closed("closed before the first frame"))

    async def send(self, text: str) -> None:
        t = self.transport
        if t is None or t.is_disconnected:
            raise Closed("the connection is closed")
        t.send(WSMsgType.TEXT, text.encode())

    async def listen(self, feed: Callable[[bytes], None]) -> None:
        """Hand every frame to ``feed`` until the connection closes."""
        self.feed = feed
        for raw in self.early:
            feed(raw)
        self.early.clear()
        assert self.transport is not None
        await self.transport.wait_disconnected()

    async def close(self) -> None:
        t = self.transport
        if t is not None and not t.is_disconnected:
            t.send_close()
            t.disconnect()
            await t.wait_disconnected()


async def connect(url: str, headers: dict[str, str]) -> tuple[PicowsWs, bytes]:
    """A connection and its first frame (the edge's welcome)."""
    _, ws = await ws_connect(PicowsWs, url, extra_headers=headers)
    assert isinstance(ws, PicowsWs)
    return ws, await asyncio.wait_for(ws.first, 10)
