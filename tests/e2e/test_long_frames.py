"""Long frames queued behind a client that reads slowly reach it whole and in order, whatever
their lengths (session 14). picows's send of a message over 8192 bytes handed uvloop a view of
its own header buffer, which the next send rewrote, so a frame queued behind a full socket went
out with a later frame's header and the client saw garbage (``1002 invalid opcode``): the
flaky slow-reader test of sessions 12-14. gateway/corked.py ``send_one`` frames those itself."""

from __future__ import annotations

import asyncio

from sessions.bus import Bus
from tests.conftest import Cluster
from tests.e2e.stalled import Frames, upgrade

LENGTHS = [16_400 + 97 * k for k in range(12)]
"""Every frame its own length (so a wrong header shows), each over the edge's hold (so each is
written on its own, as picows's ``send`` did), ~200 KB in all: within the send budget, so the
edge keeps them all for the client rather than letting it fall behind."""


def _open(port: int, session: str) -> Frames:
    frames = Frames(*upgrade(port, session, rcvbuf=4096))  # a slow reader's small window
    assert frames.next()["type"] == "welcome"
    return frames


async def test_long_frames_of_different_lengths_behind_a_slow_reader_arrive_whole(
        cluster: Cluster, bus: Bus) -> None:
    # a small kernel send buffer, so most of the burst waits in the edge's transport
    edge = cluster.edge(AGENTIA_SEND_BUFFER_BYTES="16384")
    frames = await asyncio.to_thread(_open, edge.port, "longframes")
    await bus.append("longframes", [{"type": "delta", "turn": 1, "text": "z" * n, "i": i}
                                    for i, n in enumerate(LENGTHS)])
    await asyncio.sleep(1)  # the client reads nothing while the edge writes what it can
    got = [await asyncio.to_thread(frames.next) for _ in LENGTHS]
    assert [(f["type"], f["i"], len(str(f["text"]))) for f in got] == [
        ("delta", i, n) for i, n in enumerate(LENGTHS)]
    frames.sock.close()
