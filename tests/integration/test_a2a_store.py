"""The A2A task store in Redis (control/a2a_store.py) on a real Redis: versions checked on
save (the a2a-sdk's VersionedTaskStore contract), a cancel written over a running task but not
over a finished one, owners kept apart, each owner's newest tasks kept, and the SDK's listing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from a2a.auth.user import User
from a2a.server.cluster.task_store import ConcurrentTaskModificationError
from a2a.server.cluster.version import TaskVersion
from a2a.server.context import ServerCallContext
from a2a.types.a2a_pb2 import ListTasksRequest, Task, TaskState, TaskStatus

from control.a2a_store import RedisTaskStore
from launch.redis_server import RedisServer
from sessions.bus import Bus, connect

WORKING, DONE = TaskState.TASK_STATE_WORKING, TaskState.TASK_STATE_COMPLETED
CANCELED = TaskState.TASK_STATE_CANCELED


class Named(User):
    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return self.name


def who(name: str) -> ServerCallContext:
    return ServerCallContext(user=Named(name))


def task(tid: str, state: TaskState = WORKING, ctx: str = "c1") -> Task:
    return Task(id=tid, context_id=ctx, status=TaskStatus(state=state))


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisTaskStore]:
    b = Bus(connect(redis_server.url), prefix=f"t{uuid.uuid4().hex[:10]}")
    yield RedisTaskStore(b.redis, b.keys.prefix, most=3)
    await b.close()


async def save(s: RedisTaskStore, t: Task, at: TaskVersion, owner: str = "ada") -> TaskVersion:
    return await s.save(t, event=None, prev=None, prev_version=at, context=who(owner))


async def test_versions_are_checked_and_a_cancel_only_needs_a_running_task(
        store: RedisTaskStore) -> None:
    v1 = await save(store, task("t1"), TaskVersion.MISSING)
    with pytest.raises(ConcurrentTaskModificationError):  # a second "first" write
        await save(store, task("t1"), TaskVersion.MISSING)
    v2 = await save(store, task("t1"), v1)
    assert v2.is_after(v1)
    with pytest.raises(ConcurrentTaskModificationError):  # written from a stale read
        await save(store, task("t1"), v1)
    v3 = await save(store, task("t1", CANCELED), v1)  # a cancel: no version check
    got = await store.get("t1", who("ada"))
    assert got is not None and got.task.status.state == CANCELED and got.version == v3
    with pytest.raises(ConcurrentTaskModificationError):  # nor over a finished task
        await save(store, task("t1", CANCELED), v3)
    with pytest.raises(ConcurrentTaskModificationError):  # nor over no task
        await save(store, task("nope", CANCELED), TaskVersion.MISSING)
    v4 = await save(store, task("t2"), TaskVersion.MISSING)
    await save(store, task("t2", DONE), v4)
    with pytest.raises(ConcurrentTaskModificationError):
        await save(store, task("t2", CANCELED), TaskVersion.MISSING)


async def test_owners_are_apart_and_each_keeps_its_newest(store: RedisTaskStore) -> None:
    for i in range(5):
        await save(store, task(f"a{i}"), TaskVersion.MISSING)
    await save(store, task("b0"), TaskVersion.MISSING, owner="bob")
    assert await store.get("b0", who("ada")) is None
    kept = [t for t in (f"a{i}" for i in range(5)) if await store.get(t, who("ada"))]
    assert kept == ["a2", "a3", "a4"]  # most=3: the oldest two forgotten
    assert await store.get("b0", who("bob")) is not None
    page = await store.list(ListTasksRequest(page_size=2), who("ada"))
    assert page.total_size == 3 and len(page.tasks) == 2 and page.next_page_token
    await store.delete("a3", who("ada"))
    assert await store.get("a3", who("ada")) is None
    assert (await store.list(ListTasksRequest(), who("ada"))).total_size == 2
    ttl = await store.redis.ttl(f"{store.prefix}:{{u.ada}}:a2a")
    assert 0 < ttl <= store.ttl_s
