"""The outbox cursors and sweeper (sessions/webhook_outbox.py, sessions/webhook_sweep.py) on a
real Redis, in process, for both outboxes (webhooks, and the Dapr outbox as the Dapr publisher
builds its sweeper): appends whose fan-out never ran (as if their process died after the log
append) are re-queued from the log one sweep delay later, once, as the fan-out would have
written them; caught-up and deleted sessions lose their marks; a cursor is never moved back."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentia import metrics as M
from agentia.settings import from_env
from agentia.settings_outbox import DaprPublishSettings
from launch.redis_server import RedisServer
from sessions import keys as K
from sessions import webhook_outbox as W
from sessions.bus import Bus, connect
from sessions.dapr_publish import Publisher
from sessions.webhook_sweep import Sweeper

TYPES = frozenset({"user", "message"})
DELAY = 0.5
log = logging.getLogger("test")


@pytest.fixture(params=["webhook", "dapr"])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which outbox is on (the other is off)."""
    if request.param == "dapr":
        monkeypatch.setenv("AGENTIA_DAPR_TOPIC_EVENTS", "events")
        monkeypatch.setenv("AGENTIA_DAPR_EVENTS", ",".join(sorted(TYPES)))
        monkeypatch.setenv("AGENTIA_DAPR_SWEEP_S", str(DELAY))
    else:
        monkeypatch.delenv("AGENTIA_DAPR_TOPIC_EVENTS", raising=False)
    return str(request.param)


@pytest.fixture
async def wbus(redis_server: RedisServer, kind: str, monkeypatch: pytest.MonkeyPatch
               ) -> AsyncIterator[Bus]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("AGENTIA_REDIS_PREFIX", prefix)
    b = Bus(connect(redis_server.url), prefix=prefix, shards=4,
            webhook_events=TYPES if kind == "webhook" else frozenset(), webhook_shards=2)
    assert [o.name for o in b.outboxes] == [kind]
    yield b
    await b.close()


def ob(b: Bus) -> W.Outbox:
    return b.outboxes[0]


def field(b: Bus) -> str:
    return ob(b).field


async def sweeper(b: Bus) -> Sweeper:
    if ob(b).name == "webhook":
        return Sweeper(b.redis, b.keys, ob(b), DELAY, "me",
                       lambda _kind, msg, *args: log.warning(msg, *args), M.WEBHOOK_REQUEUED)
    p = Publisher(from_env(DaprPublishSettings), b.redis)  # the publisher's own sweeper
    await p.http.aclose()
    return p.sweeper


async def outbox(b: Bus) -> list[dict[bytes, bytes]]:
    streams = ([b.keys.outbox(k, 2) for k in range(2)] if ob(b).name == "webhook"
               else [b.keys.dapr_outbox(k) for k in range(K.DAPR_SHARDS)])
    return [f for st in streams for _, f in await b.redis.xrange(st)]


def same(f: dict[bytes, bytes]) -> bytes:
    """What makes two entries one event for the receiver: the webhook delivery id, the
    CloudEvent's session and offset (its id)."""
    return f[b"d"] if b"d" in f else f[b"s"] + b":" + f[b"o"]


async def sweep(s: Sweeper) -> None:
    """One pass over every shard."""
    for k in range(s.n):
        await s.step(k)


async def lost_fan_out(b: Bus, monkeypatch: pytest.MonkeyPatch, text: str) -> int:
    """A user turn appended to the log whose fan-out never runs."""
    async def nothing(*_: Any) -> None:
        return None
    with monkeypatch.context() as m:
        m.setattr(b, "_fan_out_all", nothing)
        return (await b.submit("s1", uuid.uuid4().hex, text, user="alice")).offset


async def test_a_lost_fan_out_is_requeued_once_after_the_delay(
        wbus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    await wbus.open_session("s1", "alice")
    await wbus.submit("s1", "a", "queued as usual", user="alice")
    lost = await lost_fan_out(wbus, monkeypatch, "never queued")
    assert [f[b"o"] for f in await outbox(wbus)] == [b"1"]
    s = await sweeper(wbus)
    await sweep(s)  # seen behind: not yet (its fan-out may be on its way)
    assert len(await outbox(wbus)) == 1
    await asyncio.sleep(DELAY)
    await sweep(s)
    got = await outbox(wbus)
    assert [int(f[b"o"]) for f in got] == [1, lost]
    event = (await wbus.replay("s1", lost - 1, None)).events[0][1]
    _, want = ob(wbus).entries("s1", [(lost, event)])[0]  # what the fan-out writes
    assert {k: v for k, v in got[1].items() if k != b"t"} == {
        k.encode(): v if isinstance(v, bytes) else str(v).encode()
        for k, v in want.items() if k != "t"}  # "t": when queued
    if b"d" in got[1]:
        assert got[1][b"d"].decode() == W.delivery_id("s1", lost, event)
    assert got[1][b"e"] == event
    assert int((await wbus.session_meta("s1"))[field(wbus)]) == lost
    await asyncio.sleep(DELAY)
    await sweep(s)
    assert len(await outbox(wbus)) == 2  # once


async def test_fan_outs_finishing_out_of_order_leave_the_cursor_for_the_sweeper(
        wbus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two appenders: the later offset's fan-out finishes, the earlier one's never does. The
    cursor stays before the gap; the sweeper queues the gap and the later one again (the
    receiver drops the repeat by its delivery id)."""
    await wbus.open_session("s1", "alice")
    lost = await lost_fan_out(wbus, monkeypatch, "lost")
    later = await wbus.submit("s1", "b", "fine", user="alice")
    assert int((await wbus.session_meta("s1"))[field(wbus)]) == lost - 1
    s = await sweeper(wbus)
    await sweep(s)
    await asyncio.sleep(DELAY)
    await sweep(s)
    got = [(int(f[b"o"]), same(f)) for f in await outbox(wbus)]
    assert sorted(o for o, _ in got) == [lost, later.offset, later.offset]
    assert len({d for _, d in got}) == 2  # the repeat has the same delivery id / CloudEvent id
    assert int((await wbus.session_meta("s1"))[field(wbus)]) == later.offset


async def test_marks_of_caught_up_and_deleted_sessions_are_dropped(
        wbus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    for sid in ("s1", "s2"):
        await wbus.open_session(sid, "alice")
        await wbus.submit(sid, "a", "hi", user="alice")
    dirty = [ob(wbus).dirty(k) for k in range(ob(wbus).shards)]
    marked = {m for d in dirty for m in await wbus.redis.zrange(d, 0, -1)}
    assert marked == {b"s1", b"s2"}
    await wbus.redis.delete(*wbus.keys.session_keys("s2"))
    s = await sweeper(wbus)
    await sweep(s)
    assert {m for d in dirty for m in await wbus.redis.zrange(d, 0, -1)} == {b"s1"}
    # caught up, but marked within WEBHOOK_MARK_S + the delay: kept (its appender may skip
    # marking it meanwhile); older: dropped
    old = (time.time() - K.WEBHOOK_MARK_S - DELAY - 1) * 1000
    for d in dirty:
        await wbus.redis.zadd(d, {"s1": old}, xx=True)
    await sweep(s)
    assert [m for d in dirty for m in await wbus.redis.zrange(d, 0, -1)] == []
    assert len(await outbox(wbus)) == 2  # nothing re-queued


async def test_a_cursor_starts_at_the_log_end_and_never_moves_back(
        wbus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session appended to while the outbox was off: its first mark starts the cursor at
    its last offset (the old events are not sent); ADVANCE ignores a range it is past."""
    monkeypatch.delenv("AGENTIA_DAPR_TOPIC_EVENTS", raising=False)
    off = Bus(wbus.redis, prefix=wbus.keys.prefix, shards=4, webhook_events=frozenset(),
              webhook_shards=2)
    assert off.outboxes == ()
    await off.open_session("s1", "alice")
    for i in range(3):
        await off.submit("s1", f"m{i}", "old", user="alice")
    assert not {"wc", "dc"} & set(await off.session_meta("s1"))
    await wbus.submit("s1", "new", "new", user="alice")
    assert int((await wbus.session_meta("s1"))[field(wbus)]) == 4
    assert [f[b"o"] for f in await outbox(wbus)] == [b"4"]
    meta = wbus.keys.meta("s1")
    assert await wbus.redis.eval(W.ADVANCE, 1, meta, field(wbus), 2, 3) == 0
    assert int((await wbus.session_meta("s1"))[field(wbus)]) == 4
