"""A turn's ``START`` riding the worker's tick (sessions/deferred_appends.py ``_ride_start``,
issue 13, session 16): when other turns stream, START goes in a tick's pipeline (the tick due
within a few ms, or one sent at once with the text that waits), not in a round trip of its own;
what it writes and answers is what START apart writes and answers. A tick that fails fails it,
one cancelled before its tick is not sent, a flushed script cache runs it apart."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest

from agentia.codes import BusUnavailable
from launch.redis_server import RedisServer
from sessions import events as E
from sessions.bus import Bus, connect
from sessions.coalescer import Coalescer
from sessions.keys import DEFAULT_AGENT, shard_for
from sessions.runtime import ModelConfig, model_provider
from sessions.worker import Worker, WorkerConfig
from tests.agents_fixtures import fast


async def _session(bus: Bus, sid: str, node: str) -> int:
    """``sid`` open on ``node`` with one turn submitted, its nodes known to ``bus``."""
    await bus.heartbeat_node(node)
    await bus.open_session(sid, "ann", node)
    sub = await bus.submit(sid, "m1", "hi", user="ann")
    await bus.read_delivery(node, b"0-0", 10)
    return sub.offset


def _start(bus: Bus, sid: str, turn: int) -> asyncio.Task[Any]:
    return asyncio.create_task(bus.start_attempt(
        sid, turn, "w1", max_attempts=3, then=[E.state(turn, "thinking", "demo")],
        lease_ms=30_000, read_memory=True, first=True, tick=True))


async def _types(bus: Bus, sid: str) -> list[str]:
    return [orjson.loads(e)["type"] for _, e in (await bus.replay(sid, 0, None)).events]


async def test_a_start_waits_for_the_tick_and_answers_as_apart(bus: Bus) -> None:
    """Handed over, START is not sent until the next tick; that tick carries another
    session's text and START, and START answers as apart: the attempt, the run, the turn it
    read, the memory; the lock is taken and its events reach the log and the node."""
    turn = await _session(bus, "sr1", "nr1")
    other = await _session(bus, "sr2", "nr1")
    assert bus.rides_tick("sr1")
    start = _start(bus, "sr1", turn)
    await asyncio.sleep(0.05)
    assert not start.done() and await _types(bus, "sr1") == ["user"]
    frame = orjson.dumps(E.chunk(other, 1, 1, "Hel"))
    await bus.stream_chunks([("sr2", f"{other}:1:ab", 1, frame, "")])
    started = await asyncio.wait_for(start, 5)
    assert started.attempt == 1 and started.run.startswith(f"{turn}:1:")
    assert started.turn is not None and started.turn.text == "hi"
    assert started.memory is not None and not bus._starts
    assert await bus.redis.get(bus.keys.lock("sr1")) == b"w1"
    assert await _types(bus, "sr1") == ["user", "turn_start", "state"]
    rows = [r for r in await bus.read_delivery("nr1", b"0-0", 20) if r.session == "sr1"]
    assert [orjson.loads(r.event)["type"] for r in rows][-2:] == ["turn_start", "state"]


async def test_a_tick_that_fails_fails_the_start_and_writes_nothing(
        bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    turn = await _session(bus, "sr3", "nr3")

    async def down(*_: object) -> None:
        raise ConnectionError("Redis went away")

    start = _start(bus, "sr3", turn)
    await asyncio.sleep(0)
    with monkeypatch.context() as m:
        m.setattr(bus, "_nodes_for_tick", down)
        with pytest.raises(BusUnavailable):
            await bus.stream_chunks([])
    with pytest.raises(BusUnavailable):
        await asyncio.wait_for(start, 5)
    assert not bus._starts and await _types(bus, "sr3") == ["user"]
    assert not await bus.redis.exists(bus.keys.lock("sr3"))


async def test_a_start_cancelled_before_its_tick_is_not_sent(bus: Bus) -> None:
    turn = await _session(bus, "sr4", "nr4")
    start = _start(bus, "sr4", turn)
    await asyncio.sleep(0)
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    await bus.stream_chunks([])
    assert not bus._starts and await _types(bus, "sr4") == ["user"]


async def test_a_flushed_script_cache_runs_the_start_apart(bus: Bus) -> None:
    turn = await _session(bus, "sr5", "nr5")
    start = _start(bus, "sr5", turn)
    await asyncio.sleep(0)
    await bus.redis.script_flush()
    await bus.stream_chunks([])
    assert (await asyncio.wait_for(start, 5)).attempt == 1
    assert await _types(bus, "sr5") == ["user", "turn_start", "state"]


async def test_a_turn_started_while_another_streams_has_no_round_trip_of_its_own(
        redis_server: RedisServer) -> None:
    """The worker's round trips for a turn while another of its turns streams (its text
    waiting for a tick): START goes in a tick's pipeline (here one sent at once: the tick is
    a second off), so the turn costs the worker two pipelines and no script apart (an
    ``EVALSHA`` and a pipeline before session 16; test_turn_cost's ``test_a_turns_round_trips``
    is the turn alone, which keeps its START apart)."""
    bus = Bus(connect(redis_server.url), prefix=f"t{uuid.uuid4().hex[:10]}", shards=4)
    calls: list[str] = []
    command, pipeline = bus.redis.execute_command, bus.redis.pipeline

    async def counted(*args: Any, **kw: Any) -> Any:
        calls.append(str(args[0]).upper())
        return await command(*args, **kw)

    def piped(*args: Any, **kw: Any) -> Any:
        calls.append("pipeline")
        return pipeline(*args, **kw)

    try:
        await bus.ensure_groups()
        await bus.preload_scripts()  # as a worker's start does (a fresh cache: NOSCRIPT)
        other = await _session(bus, "o", "n1")
        await bus.open_session("s", "alice", "n1")
        worker = Worker(bus, fast, model_provider(ModelConfig(demo_word_delay=0)),
                        WorkerConfig(block_ms=20, coalesce_ms=1000))
        streaming = worker.chunks  # another turn's text waits for the tick, a second off
        Coalescer(streaming, "o", other, 1, f"{other}:1:ab").add("Hel")
        await bus.submit("s", "m1", "hello there", user="alice")
        (claim,) = await bus.claim([(DEFAULT_AGENT, shard_for("s", bus.shards))],
                                   worker.name, 10, 20)
        await bus.read_delivery("n1", b"0-0", 20)  # the session's nodes known, as a worker's
        calls.clear()
        bus.redis.execute_command, bus.redis.pipeline = counted, piped
        try:
            await worker._handle(claim)
        finally:
            bus.redis.execute_command, bus.redis.pipeline = command, pipeline
        assert calls == ["pipeline", "pipeline"], calls
        assert (await _types(bus, "s"))[-1] == "reply"
        assert not await bus.redis.exists(bus.keys.lock("s"))
        assert streaming._ticker is not None
        streaming._ticker.cancel()
        await asyncio.gather(streaming._ticker, return_exceptions=True)
    finally:
        await bus.close()
