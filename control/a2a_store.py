"""A2A task records in Redis (docs/a2a.md "Tasks"): the a2a-sdk's ``VersionedTaskStore`` over
the bus's Redis, so that every control plane replica, and one restarted, answers
``tasks/get``, ``tasks/list`` and ``tasks/cancel`` for every task, and a cancel on one replica
stops the task another replica runs (the SDK's multi-replica design: the replica running the
task finds the version moved on its next save, reloads, sees ``canceled`` and stops).

Per owner (the token's ``sub``: the SDK's owner resolver), three keys in the owner's slot
(``{u.<owner>}``, beside the user's limits):

* ``<p>:{u.<owner>}:a2a``: hash, task id → the task (its protobuf bytes);
* ``<p>:{u.<owner>}:a2a:v``: hash, task id → ``<version>:<1 if terminal else 0>``;
* ``<p>:{u.<owner>}:a2a:at``: sorted set, task id → when it was last saved (unix ms);
* ``<p>:{u.<owner>}:a2a:lease:<task id>``: string, while a control plane follows the task's
  turn (``PX`` :data:`LEASE_S`, renewed every :data:`RENEW_S`).

A save (:data:`SAVE`, one script) checks the version the task was read at (or, for a cancel,
only that the stored task is not terminal), writes all three, keeps the owner's newest
:data:`MAX_TASKS` and renews the keys' life to :data:`TASK_TTL_S`. The turns themselves are
durable in their sessions' logs; a forgotten task is only its A2A record.
"""

from __future__ import annotations

import time
from typing import Any

from a2a.server.cluster.task_store import (
    ConcurrentTaskModificationError,
    StoredTask,
    VersionedTaskStore,
)
from a2a.server.cluster.version import TaskVersion
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.owner_resolver import resolve_user_scope
from a2a.server.tasks import InMemoryTaskStore
from a2a.types.a2a_pb2 import ListTasksRequest, ListTasksResponse, Task, TaskState

MAX_TASKS = 1_000
"""Tasks kept per owner: the newest by last save; older ones are forgotten."""
TASK_TTL_S = 24 * 3600
"""An owner's task records live this long after their last save."""
LEASE_S = 5.0
"""A task's lease: the control plane following its turn renews it every :data:`RENEW_S`;
once it has lapsed, any replica settles the task from its turn's log (control/a2a.py)."""
RENEW_S = 1.0
TERMINAL = frozenset({TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_CANCELED,
                      TaskState.TASK_STATE_FAILED, TaskState.TASK_STATE_REJECTED})

# KEYS: tasks, versions, order; ARGV: task id, task bytes, terminal (0/1), the version it was
# read at (0: a first write), cancel (0/1: no version check, but the stored task must exist
# and not be terminal), now ms, most, ttl s. The new version, or -1 when the check failed.
SAVE = """
local m = redis.call('HGET', KEYS[2], ARGV[1])
local v, done = 0, '0'
if m then
  local i = string.find(m, ':', 1, true)
  v, done = tonumber(string.sub(m, 1, i - 1)), string.sub(m, i + 1)
end
if ARGV[5] == '1' then
  if not m or done == '1' then return -1 end
elseif v ~= tonumber(ARGV[4]) then return -1 end
v = v + 1
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], v .. ':' .. ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[7])
if over > 0 then
  local old = redis.call('ZPOPMIN', KEYS[3], over)
  for i = 1, #old, 2 do
    redis.call('HDEL', KEYS[1], old[i])
    redis.call('HDEL', KEYS[2], old[i])
  end
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[8]) end
return v
"""


class RedisTaskStore(VersionedTaskStore):
    """Tasks scoped to their owner, as the SDK's in-memory store scopes them: another owner's
    task is not found."""

    def __init__(self, redis: Any, prefix: str, most: int = MAX_TASKS,
                 ttl_s: int = TASK_TTL_S) -> None:
        self.redis, self.prefix, self.most, self.ttl_s = redis, prefix, most, ttl_s
        self.owner_of = resolve_user_scope
        self._save = redis.register_script(SAVE)

    def _keys(self, context: ServerCallContext) -> list[str]:
        base = f"{self.prefix}:{{u.{self.owner_of(context)}}}:a2a"
        return [base, f"{base}:v", f"{base}:at"]

    async def save(self, task: Task, *, event: Event | None, prev: Task | None,
                   prev_version: TaskVersion, context: ServerCallContext) -> TaskVersion:
        del event, prev  # the whole task is written
        cancel = task.status.state == TaskState.TASK_STATE_CANCELED
        read_at = 0 if prev_version.is_missing else int(prev_version._value)
        v = int(await self._save(
            keys=self._keys(context),
            args=[task.id, task.SerializeToString(), int(task.status.state in TERMINAL),
                  read_at, int(cancel), int(time.time() * 1000), self.most, self.ttl_s]))
        if v < 0:
            raise ConcurrentTaskModificationError(task.id)
        return TaskVersion(v)

    def _lease(self, task_id: str, context: ServerCallContext) -> str:
        return f"{self._keys(context)[0]}:lease:{task_id}"

    async def lease(self, task_id: str, context: ServerCallContext) -> None:
        """Take or renew the task's lease (for :data:`LEASE_S`)."""
        await self.redis.set(self._lease(task_id, context), b"1", px=int(LEASE_S * 1000))

    async def leased(self, task_id: str, context: ServerCallContext) -> bool:
        """Whether a control plane follows the task (its lease has not lapsed)."""
        return bool(await self.redis.exists(self._lease(task_id, context)))

    async def get(self, task_id: str, context: ServerCallContext) -> StoredTask | None:
        tasks, versions, _ = self._keys(context)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(tasks, task_id)
            pipe.hget(versions, task_id)
            raw, meta = await pipe.execute()
        if raw is None or meta is None:
            return None
        return StoredTask(Task.FromString(raw), TaskVersion(int(meta.split(b":")[0])))

    async def list(self, params: ListTasksRequest, context: ServerCallContext
                   ) -> ListTasksResponse:
        """The SDK's own filtering and paging over the owner's tasks (at most
        :data:`MAX_TASKS`, read in one ``HGETALL``)."""
        page = InMemoryTaskStore(owner_resolver=lambda _c: "", use_copying=False)
        for raw in (await self.redis.hgetall(self._keys(context)[0])).values():
            await page.save(Task.FromString(raw), context)
        return await page.list(params, context)

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        tasks, versions, order = self._keys(context)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(tasks, task_id)
            pipe.hdel(versions, task_id)
            pipe.zrem(order, task_id)
            await pipe.execute()
