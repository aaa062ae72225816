"""A worker's decoded copy of a session's memory (sessions/memory_cache.py) against a real
Redis: what a turn's agent reads is always what Redis holds, whichever worker ran the turns
before, after ``pop_item``/``clear_session``, rollbacks, the limit's trim, a session made anew
and an expired memory; and a memory that did not change is not read again."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from launch.redis_server import RedisServer
from sessions import events as E
from sessions import keys as K
from sessions.backend_redis import Backend
from sessions.bus import Bus, connect

_ids = itertools.count(1)


@pytest.fixture
async def other(redis_server: RedisServer, prefix: str) -> AsyncIterator[Bus]:
    """A second worker's bus on the same Redis and prefix: its own cache."""
    b = Bus(connect(redis_server.url), prefix=prefix, shards=4)
    yield b
    await b.close()


async def stored(bus: Bus, sid: str) -> list[Any]:
    raw = await bus.redis.lrange(bus.keys.memory(sid), 0, -1)
    return [orjson.loads(r.partition(b"|")[2]) for r in raw]


async def turn(bus: Bus, sid: str, said: str, owner: str = "w",
               fail: bool = False) -> list[Any]:
    """One turn as the worker runs it (START reads the memory, the agent's first read is
    answered from it, the ending writes the turn's items); asserts the agent read what Redis
    held; returns it. ``fail``: the attempt saves its items (as before a pause) and dies."""
    sub = await bus.submit(sid, f"m{next(_ids)}", said, user="ann")
    return await attempt(bus, sid, sub.offset, said, owner, fail)


async def attempt(bus: Bus, sid: str, offset: int, said: str, owner: str,
                  fail: bool = False,
                  during: Callable[[], Awaitable[Any]] | None = None) -> list[Any]:
    started = await bus.start_attempt(sid, offset, owner, max_attempts=5, lease_ms=30_000,
                                      read_memory=True)
    assert started.run and started.memory is not None, started
    truth = await stored(bus, sid)
    mem = bus.memory(sid, offset, owner)
    mem.preload(started.memory)
    seen = await mem.get_items()
    assert seen == truth, (said, seen, truth)
    await mem.add_items([{"role": "user", "content": said}])
    await mem.add_items([{"role": "assistant", "content": f"re: {said}"}])
    if during is not None:
        await during()
    if fail:
        await mem.save()
        await bus.release_lock(sid, owner, force=True)
        return seen
    await bus.end_turn(sid, E.reply(offset, f"re: {said}"), offset, owner,
                       remember=mem.take_unsaved())
    return seen


async def test_two_workers_taking_turns_read_each_others_items(bus: Bus, other: Bus) -> None:
    await bus.open_session("s", "ann")
    for i, b in enumerate([bus, bus, other, other, bus, other, bus, bus, other]):
        await turn(b, "s", f"turn {i}", owner=f"w{id(b)}")
    assert len(await stored(bus, "s")) == 18
    assert bus.memory_cache().hits == 2 and other.memory_cache().hits == 1


async def test_an_unchanged_memory_is_not_read_again(bus: Bus) -> None:
    """The second turn's START finds the memory at the version the worker holds: no LRANGE
    (inner calls count in commandstats), no item in its reply."""
    await bus.open_session("s", "ann")
    await turn(bus, "s", "one")

    async def lranges() -> int:
        return int((await bus.redis.info("commandstats")).get("cmdstat_lrange",
                                                               {}).get("calls", 0))

    before = await lranges()
    await turn(bus, "s", "two")
    # START's look at the posted notes and the helper's own read of the truth; not the memory
    assert await lranges() == before + 2
    assert bus.memory_cache().hits == 1
    assert [i["content"] for i in await stored(bus, "s")] == ["one", "re: one", "two",
                                                              "re: two"]


async def test_pop_and_clear_by_another_worker(bus: Bus, other: Bus) -> None:
    await bus.open_session("s", "ann")
    await turn(bus, "s", "one")
    await turn(bus, "s", "two")
    popped = await other.memory("s", 0, "w2").pop_item()
    assert popped == {"role": "assistant", "content": "re: two"}
    assert [i["content"] for i in await turn(bus, "s", "three")] == ["one", "re: one", "two"]
    await other.memory("s", 0, "w2").clear_session()
    assert await turn(bus, "s", "four") == []
    mem = bus.memory("s", 0, "w")  # the same worker, outside a turn
    assert await mem.pop_item() == {"role": "assistant", "content": "re: four"}
    assert [i["content"] for i in await turn(bus, "s", "five")] == ["four"]


async def test_the_limit_trims_the_cached_items_as_redis_does(
        bus: Bus, other: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(K, "MEMORY_MAXLEN", 5)
    await bus.open_session("s", "ann")
    for i, b in enumerate([bus, bus, bus, bus, other, bus, bus, other, other, bus]):
        seen = await turn(b, "s", f"turn {i}", owner=f"w{id(b)}")
        assert len(seen) == min(5, 2 * i)
    assert bus.memory_cache().hits >= 4


async def test_a_failed_attempt_and_rollbacks(bus: Bus, other: Bus) -> None:
    """An attempt that saved its items and died: the retry's START removes them (on either
    worker); a dead letter's rollback too."""
    await bus.open_session("s", "ann")
    await turn(bus, "s", "one")
    sub = await bus.submit("s", "m-retried", "two", user="ann")
    await attempt(bus, "s", sub.offset, "two", "w", fail=True)
    assert len(await stored(bus, "s")) == 4
    seen = await attempt(bus, "s", sub.offset, "two", "w")  # attempt 2: rolled back
    assert [i["content"] for i in seen] == ["one", "re: one"]
    third = await bus.submit("s", "m-rolled-back", "three", user="ann")
    await attempt(bus, "s", third.offset, "three", "w")
    await bus.rollback_memory("s", third.offset)  # as a dead letter's
    seen = await turn(other, "s", "four", owner="w2")
    assert [i["content"] for i in seen] == ["one", "re: one", "two", "re: two"]
    await turn(bus, "s", "five")


async def test_a_session_made_anew_is_read_again(bus: Bus, other: Bus) -> None:
    """Same id, a new epoch: its ``mv`` counts from 0 again, to the very version (count and
    length) the first worker holds of the old session; the epoch tells them apart."""
    await bus.open_session("s", "ann")
    await turn(bus, "s", "old")
    k = bus.keys
    await bus.redis.delete(k.meta("s"), k.log("s"), k.turns("s"), k.memory("s"),
                           k.client_ids("s"), k.lock("s"), k.partial("s"))
    await other.open_session("s", "ann")
    await turn(other, "s", "new", owner="w2")
    assert [i["content"] for i in await turn(bus, "s", "again")] == ["new", "re: new"]


async def test_an_expired_memory_is_read_again(bus: Bus) -> None:
    """A memory key gone without any script (its ttl): the length in the version differs."""
    await bus.open_session("s", "ann")
    await turn(bus, "s", "one")
    await bus.redis.delete(bus.keys.memory("s"))
    assert await turn(bus, "s", "two") == []


async def test_a_posted_note_moved_in_by_start(bus: Bus) -> None:
    await bus.open_session("s", "ann")
    await turn(bus, "s", "one")
    await Backend(bus).post_message("s", "system", "a note", "ops")
    seen = await turn(bus, "s", "two")
    assert [i["content"] for i in seen] == ["one", "re: one", "[system ops] a note"]


async def test_at_the_limit_a_note_or_a_pop_moves_the_version(
        bus: Bus, other: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the limit every write leaves the length as it was: only ``mv`` tells. A posted
    note moved in by START; another worker's ``pop_item`` between a turn's START and its
    ending (whose items the cache would otherwise take on top of what it had)."""
    monkeypatch.setattr(K, "MEMORY_MAXLEN", 4)
    await bus.open_session("s", "ann")
    for i in range(3):
        await turn(bus, "s", f"turn {i}")
    await Backend(bus).post_message("s", "system", "a note", "ops")
    seen = await turn(bus, "s", "with a note")
    assert seen[-1]["content"] == "[system ops] a note" and len(seen) == 4
    sub = await bus.submit("s", "m-popped", "popped under", user="ann")
    await attempt(bus, "s", sub.offset, "popped under", "w",
                  during=lambda: other.memory("s", 0, "w2").pop_item())
    await turn(bus, "s", "after")  # asserts it read what Redis holds


async def test_a_model_changing_its_input_leaves_the_cached_memory_alone(bus: Bus) -> None:
    """The direct path's input (sessions/sdk_history.py) is top-level copies of the cached
    items, as the Runner's: a model that changes its input items in place (the Responses
    model deletes ``id``/``provider_data``) does not change what the next turn reads. A
    memory whose items are all plain messages is read as :class:`KnownPlain`, one with a tool
    call is not."""
    from agents import RunContextWrapper

    from sessions import sdk_history
    from sessions.memory_cache import KnownPlain

    await bus.open_session("s", "ann")
    await turn(bus, "s", "one")

    async def a_model_that_changes_its_input() -> None:
        sub = await bus.submit("s", "m-model", "two", user="ann")
        started = await bus.start_attempt("s", sub.offset, "w", max_attempts=5,
                                          lease_ms=30_000, read_memory=True)
        mem = bus.memory("s", sub.offset, "w")
        mem.preload(started.memory or [])
        model_input, _ = await sdk_history.prepare("two", mem,
                                                   lambda: RunContextWrapper(context=None))
        for item in model_input:
            item.pop("role", None)
            item["content"] = "changed"
        await bus.end_turn("s", E.reply(sub.offset, "x"), sub.offset, "w", remember=[])

    await a_model_that_changes_its_input()
    seen = await turn(bus, "s", "three")  # a cache hit: asserts it is what Redis holds
    assert [i["content"] for i in seen] == ["one", "re: one"] and bus.memory_cache().hits == 2
    mem = bus.memory("s", 0, "w")
    entry = bus.memory_cache().get("s")
    assert entry is not None
    mem.preload(entry.items)
    assert type(await mem.get_items()) is KnownPlain
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
    await mem.add_items([call])  # type: ignore[list-item]
    mem.preload(entry.items)
    assert type(await mem.get_items()) is list


async def test_two_real_workers_keep_every_sessions_memory_whole(
        redis_server: RedisServer, bus: Bus, other: Bus) -> None:
    """Two Workers (each its bus, its cache) running the demo agent on sessions whose turns
    come in waves, so a session's turns go to either: every turn replied, and every
    session's memory holds each turn's message and reply once, in order."""
    from sessions.runtime import ModelConfig, model_provider
    from sessions.worker import Worker, WorkerConfig
    from tests.agents_fixtures import fast

    await bus.ensure_groups()
    workers = [Worker(b, fast, model_provider(ModelConfig(demo_word_delay=0)),
                      WorkerConfig(block_ms=20)) for b in (bus, other)]
    sessions, turns = [f"s{n}" for n in range(12)], 6
    for s in sessions:
        await bus.open_session(s, "ann")

    async def waves() -> None:
        for t in range(turns):
            for s in sessions:
                await bus.submit(s, f"m{t}", f"turn {t}", user="ann")
            await asyncio.sleep(0.03)

    await asyncio.gather(waves(), *(w.run(burst=True) for w in workers))
    await asyncio.gather(*(w.run(burst=True) for w in workers))
    for s in sessions:
        log = [orjson.loads(e) for _, e in (await bus.replay(s, 0, None)).events]
        assert sum(e["type"] == "reply" for e in log) == turns, s
        mem = await stored(bus, s)
        assert [m["content"] for m in mem if m.get("role") == "user"] == \
            [f"turn {t}" for t in range(turns)], (s, mem)
        assert len(mem) == 2 * turns
    assert bus.memory_cache().hits + other.memory_cache().hits > 0


@pytest.mark.parametrize("reads_only", [True, False])
async def test_a_model_that_only_reads_gets_the_cached_items(bus: Bus, reads_only: bool) -> None:
    """A direct turn (sessions/direct_run.py) of a model that declares it only reads its input
    (``reads_input_only``, the demo model) is given the memory's cached items themselves, not
    copies (issue 13, session 18: the copies were 6-9 % of a worker at 1,000 turns/s); any
    other model gets copies. Either way the next turn reads what Redis holds."""
    from agents import Agent, set_tracing_disabled

    from sessions.demo import DemoModel, DemoProvider
    from sessions.runtime import Delta, stream_turn

    set_tracing_disabled(True)
    given: list[list[Any]] = []

    class Spy(DemoModel):
        reads_input_only = reads_only

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            given.append(list(args[1]))
            return super().stream_response(*args, **kwargs)

    provider = DemoProvider(0)
    provider.model = Spy(0)
    await bus.open_session("s", "ann")
    await turn(bus, "s", "one")
    sub = await bus.submit("s", "m-spy", "two", user="ann")
    started = await bus.start_attempt("s", sub.offset, "w", max_attempts=5, lease_ms=30_000,
                                      read_memory=True)
    entry = bus.memory_cache().get("s")
    assert started.memory is not None and entry is not None
    mem = bus.memory("s", sub.offset, "w")
    mem.preload(started.memory)
    said = [x.text async for x in stream_turn(Agent(name="a"), "two", mem, provider)
            if isinstance(x, Delta)]
    assert "".join(said).startswith("You said: two")
    (model_input,) = given
    assert model_input[:2] == list(entry.items) == [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "re: one"}]
    assert all((a is b) is reads_only for a, b in zip(model_input, entry.items, strict=False))
    await bus.end_turn("s", E.reply(sub.offset, "x"), sub.offset, "w",
                       remember=mem.take_unsaved())
    await turn(bus, "s", "three")  # asserts it read what Redis holds
