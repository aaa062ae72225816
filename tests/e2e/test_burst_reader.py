"""A burst of large events to one session that reaches the edge in one read of its delivery
stream (issue 13, session 13): a client that reads gets every event, in order, once, and is
not closed; a client that reads nothing is closed SLOW, its queue bounded by the send budget
(gateway/connection.py ``on_live``, docs/protocol.md#send-budget). With the edge's delivery
reads asked for ahead and without."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from sessions.bus import Bus
from tests.conftest import Client, Cluster, Proc, token

BLOB = "y" * 16_000
N = 400
"""Events of the burst: 6.4 MB, 25 send budgets, in one append (one script, so one read of
the edge's stream takes them all): far more than a client can take in one pass of the edge's
loop, whatever the kernel's buffers hold."""


def _slow_closes(edge: Proc) -> float:
    url = f"http://127.0.0.1:{edge.internal_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('agentia_closes_total{reason="slow"}'))


@pytest.mark.parametrize("ahead", ["true", "false"], ids=["reads-ahead", "one-read"])
async def test_a_burst_in_one_read_reaches_a_reader_and_a_stalled_one_is_closed(
        cluster: Cluster, bus: Bus, ahead: str) -> None:
    edge = cluster.edge(AGENTIA_DELIVERY_READS_AHEAD=ahead, AGENTIA_SEND_STALL_S="1")
    fast = await Client.open(edge.port, session="burst")
    assert (await fast.recv())["type"] == "welcome"
    stalled = await websockets.connect(
        f"ws://127.0.0.1:{edge.port}/v1/ws?session=burst", max_queue=1, compression=None,
        additional_headers={"Authorization": f"Bearer {token('alice')}"})
    assert b'"welcome"' in await stalled.recv(decode=False)  # then it reads nothing
    await bus.append("burst", [{"type": "delta", "turn": 1, "text": BLOB, "i": i}
                               for i in range(N)])
    got: list[int] = []
    while len(got) < N:
        f = await fast.recv(20)
        assert f["type"] == "delta", f
        got.append(f["i"])
    assert got == list(range(N))
    await fast.send(type="ping", data=1)  # still open, nothing more queued for it
    assert await fast.recv() == {"type": "pong", "data": 1}
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(30):
            while True:
                await stalled.recv()
    assert info.value.rcvd is None or info.value.rcvd.code == 4000
    closes = 0.0
    for _ in range(50):  # the edge's counters reach Prometheus once a second
        closes = await asyncio.to_thread(_slow_closes, edge)
        if closes:
            break
        await asyncio.sleep(0.2)
    assert closes == 1  # the stalled one, not the reader
    await fast.close()
