"""``presence`` events (docs/protocol.md "Event types", docs/backend.md "Presence events")
against real processes: Redis and two edges, on both transports. On, a second device on the
other edge and an operator reach the first device as ``presence`` events; a connect/disconnect
storm adds a bounded number of them and ends on the final state; off (the default), none."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from sessions import keys as K
from sessions import presence_events
from sessions.bus import Bus, connect
from tests.conftest import Client, Cluster
from tests.e2e.test_backend_api import opened
from tests.e2e.test_takeover import OP

ON = {"AGENTIA_PRESENCE_EVENTS": "1"}


async def next_presence(c: Client, timeout: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            frame = await c.recv()
            if frame["type"] == "presence":
                return frame


async def logged(bus: Bus, sid: str) -> list[dict[str, Any]]:
    events = (await bus.replay(sid, 0, None)).events
    return [e for _, raw in events if (e := orjson.loads(raw))["type"] == "presence"]


async def test_a_second_device_and_an_operator_reach_the_first(cluster: Cluster,
                                                                bus: Bus) -> None:
    e1, e2 = cluster.edge(**ON), cluster.edge(**ON)
    a = await opened(e1.port, "pia", "pres")
    first = await next_presence(a)
    assert (first["devices"], first["operator"], first["call"]) == (1, False, False)
    b = await opened(e2.port, "pia", "pres")  # the other edge
    second = await next_presence(a)  # within the 2 s rate limit + a flush
    assert second["devices"] == 2 and second["offset"] > first["offset"]
    assert isinstance(second["ts"], float)
    op = await Client.open(e2.port, session="pres", tok=OP)
    assert (await op.recv())["type"] == "welcome"
    third = await next_presence(a)
    assert (third["devices"], third["operator"]) == (2, True)
    await b.close()
    await op.close()
    last = await next_presence(a)  # both in one event, or one after the other
    if (last["devices"], last["operator"]) != (1, False):
        assert (last["devices"], last["operator"]) in ((1, True), (2, False))
        last = await next_presence(a)
    assert (last["devices"], last["operator"]) == (1, False)
    states = [(e["devices"], e["operator"]) for e in await logged(bus, "pres")]
    assert states[:3] == [(1, False), (2, False), (2, True)] and states[-1] == (1, False)
    assert len(states) <= 5
    await a.close()


async def test_a_connect_storm_adds_a_bounded_number_of_events(cluster: Cluster,
                                                               bus: Bus) -> None:
    e1 = cluster.edge(**ON)
    a = await opened(e1.port, "sky", "storm")
    await next_presence(a)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for _ in range(30):  # 30 devices come and go within ~1 s
        c = await opened(e1.port, "sky", "storm")
        await c.close()
    storm_s = loop.time() - t0
    await asyncio.sleep(K.PRESENCE_EVENT_MIN_S + 1.5)  # the trailing event, if any
    events = await logged(bus, "storm")
    # the first device's event, then at most one per PRESENCE_EVENT_MIN_S of the storm, plus
    # the trailing one
    assert 1 <= len(events) <= 2 + int(storm_s / K.PRESENCE_EVENT_MIN_S) + 1, (storm_s, events)
    assert events[-1]["devices"] == 1  # ends on the state the storm left
    await a.close()


async def test_off_by_default(cluster: Cluster, bus: Bus) -> None:
    e1, e2 = cluster.edge(), cluster.edge()
    a = await opened(e1.port, "pia", "quiet")
    b = await opened(e2.port, "pia", "quiet")
    with pytest.raises(TimeoutError):
        await next_presence(a, timeout=K.PRESENCE_EVENT_MIN_S + 1)
    assert await logged(bus, "quiet") == []
    await a.close()
    await b.close()


async def test_a_call_start_and_end_are_written_at_once(cluster: Cluster, redis_server: Any,
                                                        prefix: str) -> None:
    """A voice call's start and end (what voice/bridge.py does: its node joins the session,
    heartbeats, and leaves; ``call_changed`` each time) reach a chat device as ``presence``
    events with ``call``, sooner than the rate limit would allow."""
    on = Bus(connect(redis_server.url), prefix=prefix, shards=4, presence_events=True)
    edge = cluster.edge(**ON)
    chat = await opened(edge.port, "vic", "calls")
    assert (await next_presence(chat))["call"] is False
    node = "voice-test1"
    await on.open_session("calls", "vic", node)
    await on.heartbeat_node(node)
    await presence_events.call_changed(on, "calls")
    started = await next_presence(chat, timeout=1.5)
    assert (started["devices"], started["call"]) == (1, True)
    assert node.encode() in await on.redis.hkeys(on.keys.nodes("calls"))  # kept, alive
    await on.unregister("calls", node)
    await presence_events.call_changed(on, "calls")
    ended = await next_presence(chat, timeout=1.5)
    assert (ended["devices"], ended["call"]) == (1, False)
    await chat.close()
    await on.close()
