"""Dapr memory (sessions/memory_dapr.py) on a real daprd and its real Redis (the module's
daprd of tests/dapr/test_daprd.py): the guarantees of Redis memory, docs/dapr.md.

* A failed attempt writes nothing (its retry does not see its items); a turn's items reach the
  state store once the session's next attempt starts, in order, each once.
* Fenced: a memory whose worker does not hold the session lock neither writes its turn's items
  nor trims the journal; if it moved a batch into the state store before it found the lock gone,
  the holder's next move does not write that batch again (nor when two move at once).
* Bounded: the state store keeps the newest ``max_items``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from launch.redis_server import RedisServer
from sessions import keys as K
from sessions.errors import LockLost
from sessions.memory_dapr import DaprMemory
from sessions.redis_client import connect
from tests.dapr.test_daprd import STORE, Daprd, app, daprd, daprd_bin, http, redis_here

__all__ = ["app", "daprd", "daprd_bin", "redis_here"]  # fixtures, imported to be used here


class Sessions:
    """Memories of one session, as the worker's factory makes them."""

    def __init__(self, client: Any, redis: Any, d: Daprd) -> None:
        self.client, self.redis, self.d = client, redis, d
        self.keys = K.Keys(f"t{uuid.uuid4().hex[:8]}", 4)
        self.sid = f"s-{uuid.uuid4().hex[:6]}"

    def memory(self, turn: int, owner: str = "w1", most: int = K.MEMORY_MAXLEN) -> DaprMemory:
        return DaprMemory(self.client, STORE, self.redis, self.keys, self.sid, turn, owner, most)

    async def lock(self, owner: str) -> None:
        await self.redis.set(self.keys.lock(self.sid), owner)

    def stored(self) -> list[Any]:
        """The state store's items, through daprd's state API."""
        got = http("GET", f"{self.d.url}/v1.0/state/{STORE}/{self.keys.prefix}:{self.sid}:items")
        return [] if got.status == 204 else list(got.json()["items"])

    async def journal(self) -> list[bytes]:
        return list(await self.redis.lrange(self.keys.memory(self.sid), 0, -1))


def texts(items: list[Any]) -> list[str]:
    return [str(i["content"]) for i in items]


def said(role: str, text: str) -> Any:
    return {"role": role, "content": text}


@pytest.fixture
async def s(daprd: Daprd, redis_here: RedisServer,
            monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sessions]:
    from dapr.aio.clients import DaprClient

    monkeypatch.setenv("DAPR_HTTP_PORT", str(daprd.http_port))  # the client's health wait
    client = DaprClient(address=f"127.0.0.1:{daprd.grpc_port}")
    redis = connect(redis_here.url)
    yield Sessions(client, redis, daprd)
    await client.close()  # type: ignore[no-untyped-call]
    await redis.aclose()


async def test_a_turn_is_kept_only_with_its_ending_and_moved_once(s: Sessions) -> None:
    await s.lock("w1")
    one = s.memory(1)
    assert await one.get_items() == []
    await one.add_items([said("user", "my code is 7"), said("assistant", "noted")])
    assert len(await one.get_items()) == 2  # the attempt sees its own items
    assert await s.journal() == [] and s.stored() == []  # nothing written before the ending
    await one.save()  # as the ending's APPEND writes take_unsaved(): fenced, to the journal
    assert len(await s.journal()) == 2 and s.stored() == []

    failed = s.memory(2)  # the next turn: its first read moves turn 1 into the state store
    assert texts(await failed.get_items()) == ["my code is 7", "noted"]
    assert s.stored() == [said("user", "my code is 7"), said("assistant", "noted")]
    assert await s.journal() == []
    await failed.add_items([said("user", "lost attempt")])  # then the attempt fails: no ending

    retry = s.memory(2)
    assert texts(await retry.get_items()) == ["my code is 7", "noted"]
    await retry.add_items([said("user", "second try")])
    await retry.save()
    assert texts(await s.memory(3).get_items()) == [
        "my code is 7", "noted", "second try"]
    assert texts(s.stored()) == ["my code is 7", "noted", "second try"]


async def test_writes_are_fenced_and_a_moved_batch_is_never_written_twice(s: Sessions) -> None:
    await s.lock("w1")
    one = s.memory(1)
    await one.add_items([said("user", "first")])
    await one.save()
    await s.lock("w2")  # w1's lease lapsed: w2 holds the session now
    stale = s.memory(2, owner="w1")
    with pytest.raises(LockLost):  # moved turn 1 into the state store, then found the lock gone
        await stale.get_items()
    assert len(await s.journal()) == 1  # not trimmed by a worker without the lock
    await stale.add_items([said("user", "stale")])
    with pytest.raises(LockLost):  # its turn's items are not written either
        await stale.save()
    # w2's next turn: finds turn 1 moved already (the state's `moved` mark) and adds only what
    # came after it, here its own turn 2, which ended meanwhile
    two = s.memory(2, owner="w2")
    await two.add_items([said("user", "second")])
    await two.save()
    movers = [s.memory(3, owner="w2") for _ in range(2)]  # two at once: one write wins
    got = await asyncio.gather(*(m.get_items() for m in movers))
    assert [texts(g) for g in got] == [["first", "second"]] * 2
    assert texts(s.stored()) == ["first", "second"]
    assert await s.journal() == []


async def test_the_state_store_keeps_the_newest_items(s: Sessions) -> None:
    await s.lock("w1")
    for turn in (1, 2):
        m = s.memory(turn)
        await m.add_items([said("user", f"{turn}.{i}") for i in range(2)])
        await m.save()
    assert len(await s.journal()) == 4
    items = await s.memory(3, most=3).get_items()
    assert texts(items) == ["1.1", "2.0", "2.1"]
    assert texts(s.stored()) == ["1.1", "2.0", "2.1"]
    raw = http("GET", f"{s.d.url}/v1.0/state/{STORE}/{s.keys.prefix}:{s.sid}:items").json()
    assert raw["moved"][0] == 4  # all four moved, the oldest dropped
    assert await s.journal() == []


def test_a_moved_mark_counts_only_the_batch_at_the_journals_head() -> None:
    """No daprd needed: which journal entries a ``moved`` mark says are in the state store."""
    from sessions.memory_dapr import _digest, _moved

    batch = [b"1|a", b"1|b", b"n|c"]
    assert _moved([2, _digest(batch[:2])], batch) == 2  # a dead mover's batch, then more
    assert _moved([3, _digest(batch)], batch) == 3
    assert _moved([2, _digest([b"1|a", b"1|x"])], batch) == 0  # another batch: none
    assert _moved([4, _digest([*batch, b"2|d"])], batch) == 0  # longer than the head
    assert _moved(None, batch) == 0 and _moved([1, _digest(batch[:1])], []) == 0
