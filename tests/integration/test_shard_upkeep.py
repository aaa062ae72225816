"""A worker's upkeep of the inbound shards (sessions/queue_redis.py ``maintain``, every 30 s):
what it trims, and its round trips, against a real Redis."""

from __future__ import annotations

from typing import Any

from sessions.bus import Bus
from sessions.keys import DEFAULT_AGENT, GROUP


async def test_the_upkeep_trims_below_each_shards_oldest_pending_entry_in_two_round_trips(
        bus: Bus) -> None:
    """Issue 13, session 20: four round trips a shard one after another (its group, its
    pending summary, the trim, its consumers: 33 every 30 s for 8 shards, ~0.16 Redis reads a
    turn at 40 sessions) are now two pipelines for every shard; each trim's floor is still
    its shard's last delivered entry or, if older, its oldest pending one. Shards of an agent
    with no stream yet are left alone."""
    await bus.ensure_groups()
    ids: dict[int, list[bytes]] = {}
    for k in range(3):  # shard 3: a stream and a group, nothing in it
        stream = bus.keys.inbound(k, DEFAULT_AGENT)
        ids[k] = [await bus.redis.xadd(stream, {"s": f"s{k}{i}", "o": 1}) for i in range(3)]
    claims = await bus.claim(list(range(4)), "w1", 10, 0)
    await bus.ack_all([c for c in claims if c.id == ids[int(c.session[1])][0]])
    stacks: list[list[Any]] = []
    lone: list[Any] = []
    pipeline, command = bus.redis.pipeline, bus.redis.execute_command

    def piped(*a: Any, **kw: Any) -> Any:
        p = pipeline(*a, **kw)
        execute = p.execute

        async def counted(*ea: Any, **ekw: Any) -> Any:
            stacks.append([c[0] for c in p.command_stack])
            return await execute(*ea, **ekw)
        p.execute = counted  # type: ignore[method-assign]
        return p

    async def counted_command(*a: Any, **kw: Any) -> Any:
        lone.append(a)
        return await command(*a, **kw)

    bus.redis.pipeline, bus.redis.execute_command = piped, counted_command  # type: ignore[method-assign]
    try:
        await bus.maintain((DEFAULT_AGENT, "ghost"))
    finally:
        bus.redis.pipeline, bus.redis.execute_command = pipeline, command  # type: ignore[method-assign]
    assert (len(stacks), lone) == (2, [])
    trims = {c[1]: c[4] for c in stacks[1] if c[0] == "XTRIM"}
    assert trims == {**{bus.keys.inbound(k, DEFAULT_AGENT): ids[k][1] for k in range(3)},
                     bus.keys.inbound(3, DEFAULT_AGENT): b"0-0"}
    pending = await bus.redis.xpending(bus.keys.inbound(0, DEFAULT_AGENT), GROUP)
    assert pending["pending"] == 2  # nothing pending was touched
