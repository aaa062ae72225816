"""A turn's agent runs in its session's task (issue 13, session 20: a task of its own, created,
stepped and awaited by every turn, before), and what that must keep: a user's cancel still stops
the turn at once and ends it ``cancelled``, the session's task goes on with the next turn as if
never cancelled, however many cancels arrive for the turn; a stop of the worker is not taken for
a turn's cancel. A lost lock's interruption: tests/integration/test_lease_keeping.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from agents import Agent

from sessions.bus import Bus
from sessions.demo import DemoModel
from sessions.duties import on_cancel
from sessions.keys import DEFAULT_AGENT, shard_for
from sessions.runtime import ModelConfig, model_provider
from sessions.worker import Worker, WorkerConfig
from tests.counting import TaskCount

plain = Agent(name="plain")
"""Runs on the direct path (sessions/direct_run.py) with the demo provider's model."""
slow = Agent(name="slow", model=DemoModel(word_delay=0.05))
"""Runs on the Runner (a model object of its own)."""
LONG = " ".join(f"word{i}" for i in range(40))
"""~2 s of reply at 50 ms a word."""


async def _until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, what
        await asyncio.sleep(0.002)


async def _kinds(bus: Bus, sid: str) -> list[str]:
    return [orjson.loads(e)["type"] for _, e in (await bus.replay(sid, 0, None)).events]


def _naming(names: list[str]) -> Callable[[Any], bool]:
    """Counts every task, and puts its coroutine's name in ``names``."""
    def where(coro: Any) -> bool:
        names.append(getattr(getattr(coro, "cr_code", None), "co_qualname", repr(coro)))
        return True
    return where


async def test_a_short_turn_creates_no_task_for_its_agent(bus: Bus) -> None:
    """Three turns of a session alone, each run by ``_handle`` (the turn path, no polling): no
    task runs ``_produce`` (one a turn before), and a turn's tasks are its model pump's and
    at most a tick's (the first piece's, sessions/coalescer.py)."""
    await bus.ensure_groups()
    await bus.open_session("s", "alice")
    worker = Worker(bus, plain, model_provider(ModelConfig(demo_word_delay=0)),
                    WorkerConfig(block_ms=20, coalesce_ms=1000))
    shard = (DEFAULT_AGENT, shard_for("s", bus.shards))
    made = []
    for i in range(3):
        await bus.submit("s", f"m{i}", "hello there", user="alice")
        (claim,) = await bus.claim([shard], worker.name, 10, 20)
        names: list[str] = []
        with TaskCount(_naming(names)):
            await worker._handle(claim)
        made.append(names)
    assert all("TurnProducing._produce" not in names for names in made), made
    # the model pump's, the first piece's tick's, the ending's tick's (its first: the lease
    # keeper's); one more before, ``_produce``'s
    assert made[1] == made[2] == ["ModelPump._run", "ChunkFlusher._flush",
                                  "ChunkFlusher._flush"], made
    await asyncio.gather(*worker.chunks._sending)
    await worker.acks.close()
    assert (await _kinds(bus, "s")).count("reply") == 3


@pytest.mark.parametrize("runner", [False, True])
async def test_a_cancel_stops_the_turn_and_the_session_goes_on(bus: Bus, runner: bool) -> None:
    """A slow turn cancelled twice (two requests for it): it stops within ~100 ms (its next
    word is 50 ms away) and ends ``cancelled`` with no reply; the session's task, cancelled
    once and not twice, took that cancel back, and runs the turn pending after it to its reply
    (an asyncio timeout or a cancel in that turn would misfire on a cancel left counted)."""
    await bus.ensure_groups()
    await bus.open_session("s", "alice")
    worker = Worker(bus, slow if runner else plain,
                    model_provider(ModelConfig(demo_word_delay=0.05)), WorkerConfig(block_ms=20))
    run = asyncio.create_task(worker.run())
    try:
        await bus.submit("s", "m0", LONG, user="alice")
        await _until(lambda: "s" in worker.running and worker.running["s"].task is not None,
                     "the turn runs its agent")
        await bus.submit("s", "m1", "hello there", user="alice")
        (session_task,) = worker.tasks
        if not runner:  # the direct path: the model pump's task reads the model
            assert "ModelPump._run" in [getattr(t.get_coro(), "__qualname__", "")
                                        for t in asyncio.all_tasks()]
        first = worker.running["s"]
        assert first.task is session_task  # the agent runs in the session's task
        await asyncio.sleep(0.2)
        took = time.monotonic()
        on_cancel(worker.running, f"s {first.turn}")
        on_cancel(worker.running, f"s {first.turn}")
        assert session_task.cancelling() == 1  # once, however many asked
        await _until(lambda: worker.running.get("s") is not first, "the turn stopped", 2)
        assert time.monotonic() - took < 0.1
        assert session_task.cancelling() == 0
        await _until(lambda: not worker.active, "the session's turns end", 15)
        kinds = [k for k in await _kinds(bus, "s") if k in ("reply", "cancelled")]
        assert kinds == ["cancelled", "reply"], kinds
        assert not session_task.cancelled()
    finally:
        worker.stopping.set()
        await asyncio.wait_for(run, 10)


async def test_a_stop_during_a_cancelled_turn_stays_a_stop(bus: Bus) -> None:
    """The session's task cancelled by the worker's stop while a user's cancel of its turn is
    on its way: the task ends cancelled (the stop is not taken back with the turn's cancel);
    the turn, not ended, stays pending for another worker (its entry unacked)."""
    await bus.ensure_groups()
    await bus.open_session("s", "alice")
    worker = Worker(bus, plain, model_provider(ModelConfig(demo_word_delay=0.05)),
                    WorkerConfig(block_ms=20))
    await bus.submit("s", "m0", LONG, user="alice")
    (claim,) = await bus.claim([(DEFAULT_AGENT, shard_for("s", bus.shards))], worker.name,
                               10, 20)
    task = asyncio.create_task(worker._handle(claim))
    await _until(lambda: "s" in worker.running and worker.running["s"].task is not None,
                 "the turn runs its agent")
    await asyncio.sleep(0.1)
    on_cancel(worker.running, f"s {worker.running['s'].turn}")
    task.cancel()  # the stop (``_drain``)
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()
    assert "cancelled" not in await _kinds(bus, "s")
    await worker.acks.close()
