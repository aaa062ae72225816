"""The webhook cursor and sweeper (sessions/webhook_outbox.py, sessions/webhook_sweep.py) on a
real Redis, in process: appends whose fan-out never ran (as if their process died after the
log append) are re-queued from the log one sweep delay later, once, with the fan-out's delivery
ids; caught-up and deleted sessions lose their marks; a cursor is never moved back."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from launch.redis_server import RedisServer
from sessions import keys as K
from sessions import webhook_outbox as W
from sessions.bus import Bus, connect
from sessions.webhook_sweep import Sweeper

TYPES = frozenset({"user", "message"})
DELAY = 0.3
log = logging.getLogger("test")


@pytest.fixture
async def wbus(redis_server: RedisServer) -> AsyncIterator[Bus]:
    b = Bus(connect(redis_server.url), prefix=f"t{uuid.uuid4().hex[:10]}", shards=4,
            webhook_events=TYPES, webhook_shards=2)
    yield b
    await b.close()


def sweeper(b: Bus) -> Sweeper:
    return Sweeper(b.redis, b.keys, 2, TYPES, DELAY, "me",
                   lambda _kind, msg, *args: log.warning(msg, *args))


async def outbox(b: Bus) -> list[dict[bytes, bytes]]:
    return [f for k in range(2) for _, f in await b.redis.xrange(b.keys.outbox(k, 2))]


async def sweep(s: Sweeper) -> None:
    """One pass over both shards."""
    for k in range(2):
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
    s = sweeper(wbus)
    await sweep(s)  # seen behind: not yet (its fan-out may be on its way)
    assert len(await outbox(wbus)) == 1
    await asyncio.sleep(DELAY)
    await sweep(s)
    got = await outbox(wbus)
    assert [int(f[b"o"]) for f in got] == [1, lost]
    event = (await wbus.replay("s1", lost - 1, None)).events[0][1]
    assert got[1][b"d"].decode() == W.delivery_id("s1", lost, event)
    assert int((await wbus.session_meta("s1"))["wc"]) == lost
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
    assert int((await wbus.session_meta("s1"))["wc"]) == lost - 1
    s = sweeper(wbus)
    await sweep(s)
    await asyncio.sleep(DELAY)
    await sweep(s)
    got = [(int(f[b"o"]), f[b"d"]) for f in await outbox(wbus)]
    assert sorted(o for o, _ in got) == [lost, later.offset, later.offset]
    assert len({d for _, d in got}) == 2  # the repeat has the same delivery id
    assert int((await wbus.session_meta("s1"))["wc"]) == later.offset


async def test_marks_of_caught_up_and_deleted_sessions_are_dropped(
        wbus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    for sid in ("s1", "s2"):
        await wbus.open_session(sid, "alice")
        await wbus.submit(sid, "a", "hi", user="alice")
    dirty = [wbus.keys.webhook_dirty(k, 2) for k in range(2)]
    marked = {m for d in dirty for m in await wbus.redis.zrange(d, 0, -1)}
    assert marked == {b"s1", b"s2"}
    await wbus.redis.delete(*wbus.keys.session_keys("s2"))
    s = sweeper(wbus)
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


async def test_a_cursor_starts_at_the_log_end_and_never_moves_back(wbus: Bus) -> None:
    """A session appended to while webhooks were off: its first mark starts the cursor at
    its last offset (the old events are not sent); ADVANCE ignores a range it is past."""
    off = Bus(wbus.redis, prefix=wbus.keys.prefix, shards=4, webhook_events=frozenset(),
              webhook_shards=2)
    await off.open_session("s1", "alice")
    for i in range(3):
        await off.submit("s1", f"m{i}", "old", user="alice")
    assert "wc" not in await off.session_meta("s1")
    await wbus.submit("s1", "new", "new", user="alice")
    assert int((await wbus.session_meta("s1"))["wc"]) == 4
    assert [f[b"o"] for f in await outbox(wbus)] == [b"4"]
    meta = wbus.keys.meta("s1")
    assert await wbus.redis.eval(W.ADVANCE, 1, meta, 2, 3) == 0
    assert int((await wbus.session_meta("s1"))["wc"]) == 4
