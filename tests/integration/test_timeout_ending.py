"""A turn that runs past ``turn_timeout_s`` is dead-lettered and ends with ``turn_error``
(``turn_timeout``) after the text it streamed, including the text still waiting for the
worker's next tick (issue 13, session 14: the timeout's ending went apart, before that text)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from agents import Agent
from agents.items import TResponseStreamEvent
from openai.types.responses import ResponseTextDeltaEvent

from sessions.bus import Bus
from sessions.demo import DemoModel
from sessions.keys import DEFAULT_AGENT, shard_for
from sessions.runtime import ModelConfig, model_provider
from sessions.worker import Worker, WorkerConfig


class _Hanging(DemoModel):
    """Streams ``Hel``, then nothing ever again: the turn can only time out."""

    async def stream_response(self, *args: Any,
                              **kwargs: Any) -> AsyncIterator[TResponseStreamEvent]:
        yield ResponseTextDeltaEvent(
            type="response.output_text.delta", item_id="msg_demo", output_index=0,
            content_index=0, delta="Hel", logprobs=[], sequence_number=0)
        await asyncio.Event().wait()


async def test_a_timed_out_turn_ends_after_the_text_waiting_for_its_tick(bus: Bus) -> None:
    """The tick (60 s) is far off when the turn times out (2 s): its ``Hel`` still waits. The
    node gets the chunk, then ``state idle`` and the ``turn_error``; the turn is in the
    dead-letter stream. (Before: the ending went apart at once and the chunk came with the
    next tick, after it.)"""
    await bus.heartbeat_node("nt1")
    await bus.open_session("to1", "ann", "nt1")
    sub = await bus.submit("to1", "m1", "hi", user="ann")
    worker = Worker(bus, Agent(name="hangs", model=_Hanging(word_delay=0.0)),
                    model_provider(ModelConfig(demo_word_delay=0)),
                    WorkerConfig(block_ms=20, coalesce_ms=60_000, turn_timeout_s=2.0))
    try:
        await asyncio.wait_for(worker.run(burst=True), 30)
        await worker.chunks.flush()  # the tick that was due: what still waited goes now
    finally:
        if worker.chunks._ticker is not None:
            worker.chunks._ticker.cancel()
    rows = [r for r in await bus.read_delivery("nt1", b"0-0", 100) if r.session == "to1"]
    seen = [("chunk", orjson.loads(r.event)["text"]) if r.chunk else
            (orjson.loads(r.event)["type"], orjson.loads(r.event).get("code", ""))
            for r in rows]
    assert ("chunk", "Hel") in seen, seen
    assert seen[seen.index(("chunk", "Hel")):] == [
        ("chunk", "Hel"), ("state", ""), ("turn_error", "turn_timeout")], seen
    dead = await bus.redis.xrange(bus.keys.dead_letters(shard_for("to1", 4), DEFAULT_AGENT))
    assert [(int(f[b"o"]), f[b"error"]) for _, f in dead] == [
        (sub.offset, b"the turn took too long")]
