"""A burst of large events to one session that reaches the edge in one read of its delivery
stream (issue 13, session 13): a client that reads gets every event, in order, once, and is
not closed; a client that reads nothing is closed SLOW, its queue bounded by the send budget
(gateway/connection.py ``on_live``, docs/protocol.md#send-budget). With the edge's delivery
reads asked for ahead and without."""

from __future__ import annotations

import pytest

from sessions.bus import Bus
from tests.conftest import Client, Cluster
from tests.e2e.stalled import (
    assert_reset,
    edge_report,
    metric_now,
    slow_closes,
    stalled_client,
)

BLOB = "y" * 16_000
N = 400
"""Events of the burst: 6.4 MB, 25 send budgets, in one append (one script, so one read of
the edge's stream takes them all): far more than a client can take in one pass of the edge's
loop, whatever the kernel's buffers hold."""


@pytest.mark.parametrize("ahead", ["true", "false"], ids=["reads-ahead", "one-read"])
async def test_a_burst_in_one_read_reaches_a_reader_and_a_stalled_one_is_closed(
        cluster: Cluster, bus: Bus, ahead: str) -> None:
    edge = cluster.edge(AGENTIA_DELIVERY_READS_AHEAD=ahead, AGENTIA_SEND_STALL_S="1")
    fast = await Client.open(edge.port, session="burst")
    assert (await fast.recv())["type"] == "welcome"
    stalled = await stalled_client(edge.port, "burst")
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
    closes = await slow_closes(edge)
    assert closes == 1, edge_report(edge)  # the stalled one, not the reader
    # both fell behind the burst (counted to Prometheus by the time the close is)
    assert metric_now(edge, "agentia_fell_behind_total ") >= 2, edge_report(edge)
    await assert_reset(stalled, edge)  # reset: no close frame could get through
    await fast.close()
