"""A client that does not read (tests/e2e/test_burst_reader.py, test_bad_input.py), and a raw
client that reads server frames strictly (test_long_frames.py, test_budget_drops.py)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests.conftest import Proc, token


def upgrade(port: int, session: str, rcvbuf: int = 0) -> tuple[socket.socket, bytes]:
    """A blocking socket upgraded to a WebSocket of ``session`` as alice (``rcvbuf``: its
    SO_RCVBUF, 0 the kernel's), and the bytes read past the 101's headers."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((
        f"GET /v1/ws?session={session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {key}\r\nAuthorization: Bearer {token('alice')}\r\n\r\n"
    ).encode())
    got = b""
    while b"\r\n\r\n" not in got:
        got += sock.recv(4096)
    head, rest = got.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock, rest


class Frames:
    """A raw client's byte stream read as server frames, strictly (RFC 6455 5.2). Each read
    takes at most ``recv`` bytes, then waits ``pause`` seconds: a steady reader slower than a
    burst (test_budget_drops.py)."""

    def __init__(self, sock: socket.socket, rest: bytes, recv: int = 65_536,
                 pause: float = 0.0) -> None:
        self.sock, self.buf = sock, bytearray(rest)
        self.recv, self.pause = recv, pause

    def send(self, frame: dict[str, object]) -> None:
        """One text frame under 64 KiB, masked as a client's must be (RFC 6455 5.3)."""
        data, mask = orjson.dumps(frame), os.urandom(4)
        n = len(data)
        assert n < 65_536
        head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0x80 | 126)) \
            + n.to_bytes(2, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(head + mask + masked)

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            more = self.sock.recv(self.recv)
            assert more, "the edge closed the connection"
            self.buf += more
            if self.pause:
                time.sleep(self.pause)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def next(self) -> dict[str, object]:
        b0, b1 = self._take(2)
        assert b0 == 0x81, f"not a final text frame: first byte {b0:#x}"
        assert not b1 & 0x80, "a server frame must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(self._take(2), "big")
        elif n == 127:
            n = int.from_bytes(self._take(8), "big")
        frame = orjson.loads(self._take(n))
        assert isinstance(frame, dict)
        return frame


def _open(port: int, session: str) -> socket.socket:
    sock, got = upgrade(port, session)
    while b'"welcome"' not in got:
        got += sock.recv(4096)
    return sock


async def stalled_client(port: int, session: str) -> socket.socket:
    """A client that upgrades, reads its ``welcome``, then reads nothing: a blocking socket
    that no event loop watches, so its receive buffer stays at the kernel's default (128 KiB:
    autotuning grows it only for a socket that is read; a client library that reads into its
    own buffer, as ``websockets`` with ``max_queue=1`` did here, took a whole burst of 6.4 MB
    and was rightly not slow)."""
    return await asyncio.to_thread(_open, port, session)


def _until_reset(sock: socket.socket, timeout: float) -> None:
    sock.settimeout(timeout)
    try:
        while sock.recv(65_536):
            pass
    finally:
        sock.close()


async def read_until_reset(sock: socket.socket, timeout: float = 30) -> None:
    """Read what the edge left in ``sock``'s buffers: raises ``ConnectionResetError`` when the
    edge reset it (a SLOW close), ``TimeoutError`` when nothing came for ``timeout``."""
    await asyncio.to_thread(_until_reset, sock, timeout)


async def assert_reset(sock: socket.socket, edge: Proc) -> None:
    """``sock`` was reset by ``edge`` (a SLOW close: no close frame could get through)."""
    try:
        await read_until_reset(sock)
    except ConnectionResetError:
        return
    except TimeoutError:
        pytest.fail(f"the stalled client was not reset within 30 s; {edge_report(edge)}")
    pytest.fail(f"the stalled client was closed without a reset; {edge_report(edge)}")


def edge_report(edge: Proc) -> str:
    """For a failed send-budget test: the edge's counters (they reach Prometheus once a
    second) and the warnings in its log (which connection it closed, and why): a failure in CI
    must say which side failed (session 14: the slow-reader test's only clue was its edge's
    log, which said nothing of closes)."""
    counts: dict[str, object]
    try:
        counts = {name: metric_now(edge, series) for name, series in _REPORTED}
    except OSError as exc:
        counts = {"metrics unreadable": repr(exc)}
    lines = [line for line in Path(edge.log.name).read_text(errors="replace").splitlines()
             if "WARNING" in line or "ERROR" in line]
    return f"edge {counts}; warnings in {edge.log.name}: {' | '.join(lines[-6:]) or 'none'}"


_REPORTED = (("slow closes", 'agentia_closes_total{reason="slow"}'),
             ("closes", "agentia_closes_total"), ("fell behind", "agentia_fell_behind_total "))


def metric_now(edge: Proc, series: str) -> float:
    """The sum of the edge's /metrics lines that start with ``series``."""
    url = f"http://127.0.0.1:{edge.internal_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(series))


def _slow_closes_now(edge: Proc) -> float:
    return metric_now(edge, 'agentia_closes_total{reason="slow"}')


async def slow_closes(edge: Proc, within: float = 30) -> float:
    """The edge's SLOW closes once there is one (its counters reach Prometheus once a
    second), or 0 after ``within`` seconds. Wait for it before reading a stalled client: once
    read, it is not slow any more. A kernel that is not read may still take a burst now and
    then (a loopback receive queue compacted), which the edge rightly counts as progress."""
    closes = 0.0
    for _ in range(int(within / 0.2)):
        closes = await asyncio.to_thread(_slow_closes_now, edge)
        if closes:
            break
        await asyncio.sleep(0.2)
    return closes
