"""A running turn's partial never shows a hole (sessions/attempts_redis.py ``partial``, issue
13 session 19): pieces of the partial buffer lost (a restart loses the AOF's last second, a
failover the replication lag) stop it before the first one missing."""

from __future__ import annotations

from sessions import events as E
from sessions import keys as K
from sessions.bus import Bus


async def _turn(bus: Bus, sid: str, node: str) -> tuple[int, str]:
    await bus.heartbeat_node(node)
    await bus.open_session(sid, "ann", node)
    sub = await bus.submit(sid, "m1", "hi", user="ann")
    run = f"{sub.offset}:1:ab12"
    await bus.append(sid, E.turn_start(sub.offset, 1), run=run)
    return sub.offset, run


async def test_a_partial_stops_at_a_missing_piece(bus: Bus) -> None:
    """Pieces lost (a restart, a failover): the partial holds the text up to the first one
    missing, never the text after it with a hole (before: "one three ", seq 30)."""
    _turn_offset, run = await _turn(bus, "tw3", "tn3")
    key = bus.keys.partial("tw3")
    await bus.redis.rpushx(key, f"{run}#10|one ", f"{run}#30|three ")  # 20 lost
    got = await bus.partial("tw3")
    assert got is not None and (got.seq, got.text) == (10, "one ")
    await bus.redis.delete(key)
    await bus.redis.rpush(key, run, f"{run}#20|two ", f"{run}#30|three ")  # 10 lost
    assert await bus.partial("tw3") is None
    assert K.PARTIAL_EVERY == 10
