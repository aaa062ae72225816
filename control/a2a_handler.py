"""The A2A request handler (docs/a2a.md "Tasks across replicas"): the a2a-sdk's, with three
things made to work on every control plane replica, from the task store and the turn's session
log rather than from the replica that runs the task.

* ``tasks/cancel`` also cancels the task's turn on the bus: the SDK calls the executor's
  ``cancel`` only on the replica running the task (on another it writes ``canceled`` to the
  shared store, and the running replica stops at its next save), so the turn is cancelled
  here, from the task's record, on either.
* ``tasks/get`` of a task no control plane follows any more (its lease lapsed) settles it from
  its turn's end in the log (:meth:`Handler.settle`).
* ``tasks/resubscribe`` (``SubscribeToTask``) of a task this replica does not run streams it
  from the turn's log and partial text, as the running replica does (:meth:`Handler.tail`).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncGenerator
from typing import Any

from a2a.helpers.proto_helpers import new_text_part
from a2a.server.agent_execution import AgentExecutor
from a2a.server.cluster.task_store import ConcurrentTaskModificationError
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import DefaultRequestHandlerV2
from a2a.types import (
    AgentCard,
    Artifact,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import TaskNotFoundError, UnsupportedOperationError
from a2a.utils.task import apply_history_length

from control import a2a_turns as T
from control.a2a_store import LEASE_S, TERMINAL, RedisTaskStore
from sessions.bus import Bus

FAILED = TaskState.TASK_STATE_FAILED


class Handler(DefaultRequestHandlerV2):
    """The SDK's request handler over the shared task store (module doc)."""

    def __init__(self, bus: Bus, executor: AgentExecutor, store: RedisTaskStore,
                 card: AgentCard) -> None:
        # no SDK event stream: its warning (and log line) that cross-replica streaming is off
        # would be wrong here, as tasks/resubscribe on another replica is ours (tail)
        sdk_log = logging.getLogger(DefaultRequestHandlerV2.__module__)
        level = sdk_log.level
        sdk_log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                super().__init__(executor, store, card)
        finally:
            sdk_log.setLevel(level)
        self.bus, self.store = bus, store

    async def on_cancel_task(self, params: Any, context: Any) -> Any:
        stored = await self.store.get(params.id, context)
        done = await super().on_cancel_task(params, context)
        running = T.running_turn(stored.task) if stored is not None else None
        if running is not None:
            await self.bus.cancel(*running)
        return done

    async def on_get_task(self, params: Any, context: Any) -> Any:
        task = await super().on_get_task(params, context)
        if task is None or task.status.state in TERMINAL:
            return task
        done = await self.settle(params.id, context)
        return task if done is None else apply_history_length(done, params)

    async def on_subscribe_to_task(self, params: Any, context: Any
                                   ) -> AsyncGenerator[Any, None]:
        if await self._active_task_registry.get(params.id) is not None:
            async for event in super().on_subscribe_to_task(params, context):
                yield event  # this replica runs it: the SDK's own live stream
            return
        async for event in self.tail(params.id, context):
            yield event

    async def tail(self, task_id: str, context: ServerCallContext
                   ) -> AsyncGenerator[Any, None]:
        """A task run by another replica (or by none any more), as the SDK streams a
        resubscription: the task as stored, its reply's new text as ``reply`` artifact chunks
        (read every :data:`T.POLL_S`, as the running replica reads it), then its end: the whole
        reply (``lastChunk``) when it completed, and the terminal status. The end is the
        stored task's when it is terminal (settled here if its lease lapsed), else the log's.
        Bounded by the turn's :data:`T.TURN_LIMIT_S`; a task still ``submitted`` is waited
        for at most twice :data:`LEASE_S`."""
        stored = await self.store.get(task_id, context)
        if stored is None:
            raise TaskNotFoundError
        task = stored.task
        if task.status.state in TERMINAL:  # as the SDK answers it
            raise UnsupportedOperationError(
                message=f"Task {task_id} is in terminal state: "
                        f"{TaskState.Name(task.status.state)}")
        yield task
        task = await self._turn_of(task, context)
        running = T.running_turn(task)
        end: dict[str, Any] | None = None
        if running is not None:
            limit = max(0.0, T.TURN_LIMIT_S - T.age_s(task))
            async for step in T.follow(self.bus, *running, T.reply_text(task), limit):
                if step.text:
                    yield TaskArtifactUpdateEvent(
                        task_id=task.id, context_id=task.context_id, append=step.append,
                        artifact=Artifact(artifact_id=T.ARTIFACT, name=T.ARTIFACT,
                                          parts=[new_text_part(step.text)]))
                end = step.end
        for event in await self._ended(task, end, context):
            yield event

    async def _turn_of(self, task: Task, context: ServerCallContext) -> Task:
        """The task once it is working on a turn or terminal (a ``submitted`` one is read again
        every :data:`T.POLL_S`, at most twice :data:`LEASE_S`, then settled if unfollowed)."""
        for _ in range(int(2 * LEASE_S / T.POLL_S)):
            if task.status.state in TERMINAL or T.running_turn(task) is not None:
                return task
            await asyncio.sleep(T.POLL_S)
            stored = await self.store.get(task.id, context)
            if stored is None:
                raise TaskNotFoundError
            task = stored.task
        return await self.settle(task.id, context) or task

    async def _ended(self, task: Task, end: dict[str, Any] | None,
                     context: ServerCallContext) -> list[Any]:
        """The last events of a tailed task: its terminal form (stored, settled here, or,
        while the replica following it has not saved it yet, from the log's ``end``)."""
        done = await self.settle(task.id, context)
        if done is None:
            stored = await self.store.get(task.id, context)
            done = stored.task if stored is not None else task
        if done.status.state not in TERMINAL and end is not None:
            done = T.settled(done, *T.end_status(done, end))
        events: list[Any] = []
        if done.status.state == TaskState.TASK_STATE_COMPLETED:
            events.append(TaskArtifactUpdateEvent(
                task_id=done.id, context_id=done.context_id, last_chunk=True,
                artifact=Artifact(artifact_id=T.ARTIFACT, name=T.ARTIFACT,
                                  parts=[new_text_part(T.reply_text(done))])))
        events.append(TaskStatusUpdateEvent(task_id=done.id, context_id=done.context_id,
                                            status=done.status))
        return events

    async def settle(self, task_id: str, context: ServerCallContext) -> Task | None:
        """The task ended from its turn's log, and saved, if its lease has lapsed (the control
        plane that followed it died or stopped) and the turn has ended (or is past
        :data:`T.TURN_LIMIT_S`, or gone from the log); else None. Bounded: one read of the
        task and its lease, then at most :data:`T.SCAN_EVENTS` log events. A concurrent
        write (the owner was only slow, or another replica settled it first) wins: its task is
        returned."""
        stored = await self.store.get(task_id, context)
        if stored is None or stored.task.status.state in TERMINAL \
                or await self.store.leased(task_id, context):
            return None
        done = await self._ending(stored.task)
        if done is None:
            return None
        try:
            await self.store.save(done, event=None, prev=stored.task,
                                  prev_version=stored.version, context=context)
        except ConcurrentTaskModificationError:
            again = await self.store.get(task_id, context)
            return again.task if again is not None else None
        return done

    async def _ending(self, task: Task) -> Task | None:
        """The terminal form of an unfollowed task, or None while its turn goes on."""
        running = T.running_turn(task)
        if running is None:  # submitted: its control plane stopped before the turn's record
            return T.settled(task, T.status(FAILED, T.said(
                task, "the control plane that took this task stopped before recording its "
                      f"turn (any turn goes on in session a2a:{task.context_id})")))
        sid, turn = running
        try:
            end = await T.find_end(self.bus, sid, turn)
        except T.Gone:
            return T.settled(task, T.status(FAILED, T.said(
                task, f"turn {turn} is no longer in the log of session {sid}")))
        if end is not None:
            return T.settled(task, *T.end_status(task, end))
        if T.age_s(task) < T.TURN_LIMIT_S:
            return None
        return T.settled(task, T.status(FAILED, T.said(
            task, f"the turn did not end within {T.TURN_LIMIT_S:.0f} s")))
