"""A dead-lettered turn is one entry of the dead-letter stream, even when its ending fails on
a Redis outage after the entry was written and the worker runs the turn's ending again
(session 15: the retried attempt wrote a second entry)."""

from __future__ import annotations

import asyncio
from typing import Any

from agentia.codes import BusUnavailable
from sessions.bus import Bus
from sessions.keys import DEFAULT_AGENT, shard_for
from sessions.runtime import ModelConfig, model_provider
from sessions.worker import Worker, WorkerConfig
from tests.agents_fixtures import failing


async def test_an_ending_that_fails_after_the_dead_letter_writes_one_entry(bus: Bus) -> None:
    """The turn fails on its only attempt; the next START finds it past its attempts and the
    worker dead-letters it; that ending meets an outage (BusUnavailable), the worker retries
    the session and dead-letters the turn again: the stream holds one entry, the session one
    ``turn_error``."""
    await bus.heartbeat_node("ndl1")
    await bus.open_session("dl1", "ann", "ndl1")
    sub = await bus.submit("dl1", "m1", "hi", user="ann")
    real = bus.end_turn
    calls: list[Any] = []

    async def down_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1])
        if len(calls) == 1:  # Redis went away after the dead-letter entry was written
            raise BusUnavailable()
        return await real(*args, **kwargs)

    bus.end_turn = down_once  # type: ignore[method-assign]
    worker = Worker(bus, failing, model_provider(ModelConfig(demo_word_delay=0)),
                    WorkerConfig(block_ms=20, max_attempts=1, retry_backoff_s=0.0))
    try:
        await asyncio.wait_for(worker.run(burst=True), 30)
    finally:
        if worker.chunks._ticker is not None:
            worker.chunks._ticker.cancel()
    assert len(calls) == 2, calls  # the outage, then the ending that went in
    dead = await bus.redis.xrange(bus.keys.dead_letters(shard_for("dl1", 4), DEFAULT_AGENT))
    assert [(int(f[b"o"]), f[b"error"]) for _, f in dead] == [
        (sub.offset, b"the turn failed on every attempt")], dead
    log = await bus.redis.xrange(bus.keys.log("dl1"))
    assert sum(b'"turn_error"' in f[b"e"] for _, f in log) == 1
