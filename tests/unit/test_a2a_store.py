"""control/a2a.py keeps at most MAX_TASKS tasks in memory: the least recently saved go."""

from __future__ import annotations

from a2a.server.context import ServerCallContext
from a2a.types import Task

from control.a2a import BoundedTaskStore


async def test_the_oldest_tasks_are_forgotten_past_the_bound() -> None:
    store = BoundedTaskStore(most=3)
    ctx = ServerCallContext()
    for i in range(4):
        await store.save(Task(id=f"t{i}", context_id="c"), ctx)
    await store.save(Task(id="t1", context_id="c"), ctx)  # saved again: newest now
    await store.save(Task(id="t4", context_id="c"), ctx)
    kept = [i for i in range(5) if await store.get(f"t{i}", ctx) is not None]
    assert kept == [1, 3, 4]
