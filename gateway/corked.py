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

HOLD_MAX = 16_384
"""Bytes a connection holds at most: past them it writes at once. Held bytes count in its send
budget (at least 64 KiB): a burst in one pass (a big delivery batch of one session) must not
close a client that reads as SLOW for bytes the kernel would have taken."""


class Holder(Protocol):
    def flush(self) -> None: ...


def framed(frames: list[bytes]) -> bytes:
    """Text frames as a server sends them, one after the other."""
    out = bytearray()
    for f in frames:
        n = len(f)
        if n < 126:
            out += bytes((0x81, n))
        elif n < 65536:
            out += b"\x81\x7e" + n.to_bytes(2, "big")
        else:
            out += b"\x81\x7f" + n.to_bytes(8, "big")
        out += f
    return bytes(out)


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
