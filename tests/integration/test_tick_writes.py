"""A worker's tick of chunks on a single Redis (sessions/tick_writes.py, issue 13 session 19):
its copies (delivery entries, partial pieces) skip the AOF, a node's waiting read gets the whole
tick in one answer, and a partial never shows a gap when pieces are missing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from launch.redis_server import RedisServer
from sessions import delivery_redis as D
from sessions import events as E
from sessions import keys as K
from sessions.bus import Bus, connect


@pytest.fixture
async def aof_bus(tmp_path: Path, prefix: str) -> AsyncIterator[Bus]:
    """A bus on a private redis-server with the AOF on (fsync every second, production's)."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    b = Bus(connect(server.url), prefix=prefix, shards=4)
    try:
        yield b
    finally:
        await b.close()
        server.stop()


async def _aof_bytes(bus: Bus) -> int:
    return int((await bus.redis.info("persistence"))["aof_current_size"])


async def _turn(bus: Bus, sid: str, node: str) -> tuple[int, str]:
    await bus.heartbeat_node(node)
    await bus.open_session(sid, "ann", node)
    sub = await bus.submit(sid, "m1", "hi", user="ann")
    run = f"{sub.offset}:1:ab12"
    await bus.append(sid, E.turn_start(sub.offset, 1), run=run)
    return sub.offset, run


def _piece(sid: str, turn: int, run: str, seq: int, text: str, buffered: str = ""
           ) -> tuple[str, str, int, bytes, str]:
    return sid, run, seq, orjson.dumps(E.chunk(turn, 1, seq, text)), buffered


async def test_a_ticks_copies_are_not_written_to_the_aof(aof_bus: Bus) -> None:
    """Ten ticks of pieces, the tenth with the partial buffer's piece: the node's stream and
    the buffer have them, the AOF not a byte more (each tick wrote it before: a ``write()``
    of redis-server per tick); the turn's ending, durable, is written."""
    bus = aof_bus
    turn, run = await _turn(bus, "tw1", "tn1")
    stream, partial = bus.keys.delivery("tn1"), bus.keys.partial("tw1")
    entries, before = await bus.redis.xlen(stream), await _aof_bytes(bus)
    for seq in range(1, 11):
        await bus.stream_chunks([_piece("tw1", turn, run, seq, f"w{seq} ",
                                        "".join(f"w{n} " for n in range(1, 11)) * (seq == 10))])
    assert await bus.redis.xlen(stream) == entries + 10
    assert await bus.redis.lrange(partial, 1, -1) == [
        f"{run}#10|".encode() + "".join(f"w{n} " for n in range(1, 11)).encode()]
    assert await bus.redis.ttl(stream) > 0  # the first piece's EXPIRE ran
    assert await _aof_bytes(bus) == before
    await bus.append("tw1", E.reply(turn, "the whole text"), done=turn)
    assert await _aof_bytes(bus) > before


async def test_a_waiting_read_gets_the_whole_tick_in_one_answer(
        bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tick with two entries for one node (a plain chunk and one of another shape go in
    entries of their own): the node's read waiting in Redis is answered once, with both. As
    separate commands it was answered after the first ``XADD`` and the next read took the
    other."""
    monkeypatch.setattr(D, "READERS_KEPT", 4)
    turn, run = await _turn(bus, "tw2", "tn2")
    first = await bus.read_delivery("tn2", b"0-0", 60_000)  # the reads start, in flight
    read = asyncio.create_task(bus.read_delivery("tn2", first[-1].id, 60_000))
    for _ in range(200):  # until the read waits in Redis
        if int((await bus.redis.info("clients"))["blocked_clients"]):
            break
        await asyncio.sleep(0.01)
    odd = b'{"type":"chunk","odd":1}'  # not the plain shape: an entry of its own (`b`)
    await bus.stream_chunks([_piece("tw2", turn, run, 1, "a"), ("tw2", run, 2, odd, "")])
    got = await asyncio.wait_for(read, 5)
    assert sorted(d.chunk.seq for d in got if d.chunk is not None) == [1, 2]


async def test_a_partial_stops_at_a_missing_piece(bus: Bus) -> None:
    """Pieces lost (not in the AOF or on a replica: a restart, a failover): the partial holds
    the text up to the first one missing, never the text after it with a gap."""
    _turn_offset, run = await _turn(bus, "tw3", "tn3")
    key = bus.keys.partial("tw3")
    await bus.redis.rpushx(key, f"{run}#10|one ", f"{run}#30|three ")  # 20 lost
    got = await bus.partial("tw3")
    assert got is not None and (got.seq, got.text) == (10, "one ")
    await bus.redis.delete(key)
    await bus.redis.rpush(key, run, f"{run}#20|two ", f"{run}#30|three ")  # 10 lost
    assert await bus.partial("tw3") is None
    assert K.PARTIAL_EVERY == 10
