"""The edge's held frames (gateway/corked.py): framed as picows frames a server's text, so a
client parses them as the frames written one by one; held connections flushed once a pass."""

from __future__ import annotations

import asyncio

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect, ws_create_server

from gateway.corked import HOLD_MAX, Cork, framed
from gateway.ws_picows import PicowsConnection

SIZES = (0, 1, 125, 126, 127, 65_535, 65_536, 70_000)


class Collect(WSListener):
    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.done = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        assert frame.msg_type == WSMsgType.TEXT and frame.fin
        self.got.append(frame.get_payload_as_bytes())
        if len(self.got) == 2 * len(SIZES) and not self.done.done():
            self.done.set_result(None)


class Write(WSListener):
    def on_ws_connected(self, transport: WSTransport) -> None:
        frames = [bytes([65 + i % 26]) * n for i, n in enumerate(SIZES)]
        transport.underlying_transport.write(framed(frames))  # held ones, in one write
        for f in frames:  # then the same one by one, as picows frames them
            transport.send(WSMsgType.TEXT, f)


async def test_held_frames_parse_as_picows_frames() -> None:
    server = await ws_create_server(lambda _request: Write(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        transport, client = await ws_connect(Collect, f"ws://127.0.0.1:{port}/")
        assert isinstance(client, Collect)
        await asyncio.wait_for(client.done, 10)
        half = len(SIZES)
        assert client.got[:half] == client.got[half:]
        assert [len(g) for g in client.got[:half]] == list(SIZES)
        transport.disconnect()
    finally:
        server.close()


async def test_each_held_connection_flushes_once_after_the_pass() -> None:
    class Conn:
        def __init__(self) -> None:
            self.flushes = 0

        def flush(self) -> None:
            self.flushes += 1

    cork, a, b = Cork(), Conn(), Conn()
    cork.hold(a)
    cork.hold(b)
    assert a.flushes == b.flushes == 0  # nothing is written during the pass
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert a.flushes == b.flushes == 1 and cork.held == [] and not cork.scheduled


class FakeSocket:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return 0  # the kernel took everything


class FakeTransport:
    is_close_frame_sent = False

    def __init__(self) -> None:
        self.underlying_transport = FakeSocket()
        self.sent: list[bytes] = []

    def send(self, kind: WSMsgType, frame: bytes) -> None:
        self.sent.append(frame)


class FakeConn:
    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1

    def mark_closed(self) -> None:
        raise AssertionError("nothing failed")


async def test_a_connection_holds_its_frames_until_the_pass_ends_or_a_burst() -> None:
    t, conn = FakeTransport(), FakeConn()
    pc = PicowsConnection(conn)  # type: ignore[arg-type]
    pc.t = t  # type: ignore[assignment]
    assert pc.send_now(b"a") and pc.send_now(b"bb")
    assert t.sent == [] and t.underlying_transport.writes == [] and pc.buffered() == 3
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert t.underlying_transport.writes == [framed([b"a", b"bb"])] and pc.buffered() == 0
    assert pc.send_now(b"c")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert t.sent == [b"c"]  # alone: picows frames it
    big = b"x" * HOLD_MAX
    assert pc.send_now(b"d") and pc.send_now(big)  # past the bound: written at once
    assert t.underlying_transport.writes[-1] == framed([b"d", big]) and pc.buffered() == 0
    assert conn.wakes >= 3
