"""Frames an edge writes to one picows connection during one pass of the event loop, written
to its socket together: one write (one send syscall, one TCP segment over loopback, one
wake-up of the client) instead of one per frame (issue 13).

A short turn is 8 frames to its client (``user``, ``ack``, ``turn_start``, 3 ``state``,
``chunk``, ``reply``); the ones that come out of one read of the node's delivery stream
(``turn_start`` and its ``state``, the ``reply`` and its ``state``...) are written by one
synchronous loop over the batch, so they meet here. The frames are held until the callbacks
of this pass of the loop have run (``call_soon``), then each connection writes what it holds
in one piece, framed as picows frames a server's text (RFC 6455: FIN, opcode 1, no mask).
Every other write of the connection (a frame that had to wait, a pong, a close) first writes
what is held, so the order on the wire is the order of the writes. Held bytes count in the
connection's send budget (``PicowsConnection.buffered``)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from picows import WSMsgType, WSTransport

HOLD_MAX = 16_384
"""Bytes a connection holds at most: past them it writes at once. Held bytes count in its send
budget (at least 64 KiB): a burst in one pass (a big delivery batch of one session) must not
close a client that reads as SLOW for bytes the kernel would have taken."""


class Holder(Protocol):
    def flush(self) -> None: ...


def header(n: int) -> bytes:
    """The header of a server's text frame of ``n`` bytes (FIN, opcode 1, no mask)."""
    if n < 126:
        return bytes((0x81, n))
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big")
    return b"\x81\x7f" + n.to_bytes(8, "big")


def framed(frames: list[bytes]) -> bytes:
    """Text frames as a server sends them, one after the other."""
    out = bytearray()
    for f in frames:
        out += header(len(f))
        out += f
    return bytes(out)


PICOWS_COPIES_UP_TO = 8192
"""picows 2.3.1's server side copies a message of at most this many bytes into its write
buffer with its header. A longer one goes to the transport as ``writelines([header,
message])``, ``header`` a memoryview of picows's own write buffer, which its next ``send``
rewrites; uvloop keeps what it cannot write at once without copying it. So a long frame
queued behind a full socket went out with a later frame's header: frames of other lengths
queued behind a slow client were garbled (its client closed 1002 "invalid opcode"; the
flaky slow-reader test of sessions 12-14, 1 run in ~225 under load, and
tests/e2e/test_long_frames.py every time). Longer frames are framed here, header and payload
in one bytes object of their own."""


def send_one(t: WSTransport, frame: bytes) -> None:
    """Write one text frame to ``t`` (picows's own send only where it copies)."""
    if len(frame) <= PICOWS_COPIES_UP_TO:
        t.send(WSMsgType.TEXT, frame)
    else:
        t.underlying_transport.write(header(len(frame)) + frame)


class Cork:
    """The connections holding frames in this pass of the loop (each once: at most every
    connection of the edge), flushed by one callback."""

    def __init__(self) -> None:
        self.held: list[Holder] = []
        self.scheduled = False

    def hold(self, conn: Holder) -> None:
        self.held.append(conn)
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush_all)

    def flush_all(self) -> None:
        self.scheduled = False
        held, self.held = self.held, []
        for conn in held:
            conn.flush()


CORK = Cork()
"""The edge process's (one event loop)."""
