"""A worker's background duties beside its turns: the cancel feed and the heartbeat."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sessions import keys as K
from sessions.roles import Ended, WorkerBus

if TYPE_CHECKING:
    from sessions.turn_log import TurnLog

log = logging.getLogger("agentia.worker")


@dataclass(slots=True)
class Running:
    """The turn a worker is running for a session (sessions/worker.py)."""

    turn: int = 0
    task: asyncio.Task[Any] | None = None
    """The session's task while it runs the turn's agent (``_produce``, in that task since
    session 20: no task of its own), else None: what a cancel or a lost lock interrupts."""
    interrupted: bool = False
    """:meth:`interrupt` cancelled ``task`` (the session's task takes that cancel back)."""
    cancelled_by_user: bool = False
    lost: bool = False
    log: TurnLog | None = None
    """What the running attempt writes to the log (its state, its agent)."""
    attempt: int = 0
    paused: bool = False
    """The turn waited for approval in this attempt (its pause record is dropped at its end)."""
    decided: asyncio.Event | None = None
    """Set by a notice that a decision was recorded, while the turn waits for one."""
    ended: Ended | None = None
    """The turn's ending (``end_turn``): whether it freed the session lock (no turn was
    pending after it), acked the inbound entry, and the turn pending after it."""

    def interrupt(self) -> None:
        """Stop the turn's agent (a user's cancel, a lost lock): cancel the session's task
        while it runs it, once however many ask (it takes back exactly one cancel)."""
        if self.task is not None and not self.interrupted:
            self.interrupted = True
            self.task.cancel()

    async def run_here(self, work: Coroutine[Any, Any, None]) -> None:
        """Run the turn's agent (``work``) in the session's own task, which a cancel or a
        lost lock interrupts while (and only while) it runs (``task``): a task of its own was
        created, stepped and awaited by every turn (issue 13, session 20). The interruption's
        cancel is taken back here (``uncancel``), whether ``work`` let it out or not
        (``ModelPump.stop`` swallows one that lands in it): the session's task goes on to end
        the turn. Nothing awaits between setting and clearing ``task`` and entering and
        leaving ``work``, so a cancel can only land in it."""
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        try:
            await work
        finally:
            self.task = None
            if self.interrupted:
                task.uncancel()


def still_cancelled() -> bool:
    """Whether the current task was cancelled by more than a turn's interruption (the worker
    stopping: ``_drain``), which :meth:`Running.run_here` took back already."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def cancel_loop(bus: WorkerBus, running: dict[str, Running]) -> None:
    """Follow the edges' cancel requests (``"<session> <turn>"``) and cancel the matching
    running turn, and their notices of approval decisions (``"<session> <turn> approval"``)
    and wake the matching waiting turn, and of a node joining a session (``"<session>
    nodes"``, OPEN); resubscribe when the feed is lost."""
    while True:
        try:
            async with bus.cancel_feed() as feed:
                async for data in feed:
                    if data.endswith(" nodes"):  # a node joined the session (OPEN)
                        bus.nodes_changed(data[:-6])
                    else:
                        on_cancel(running, data)
        except Exception as exc:
            log.warning("cancel feed lost (%s); resubscribing", exc)
            await asyncio.sleep(0.5)


def on_cancel(running: dict[str, Running], data: str) -> None:
    sid, _, rest = data.partition(" ")
    turn, _, what = rest.partition(" ")
    run = running.get(sid)
    if not run or str(run.turn) != turn:
        return
    if what:  # a decision (sessions/approvals.py): the record says which
        if run.decided is not None:
            run.decided.set()
        return
    run.cancelled_by_user = True
    run.interrupt()
    if run.decided is not None:  # a waiting turn also looks at the flag when woken
        run.decided.set()


async def beat(bus: WorkerBus, name: str, agents: list[dict[str, Any]],
               streams: tuple[str, ...]) -> None:
    """Tell the control plane this worker lives and renew the registry entries of the
    ``agents`` it runs (every ``AGENT_RENEW_S``, 5 s); upkeep of the shards of ``streams``
    (the agents whose shards it reads) every 30 s."""
    n = 0
    while True:
        with suppress(Exception):
            await bus.worker_alive(name)
            await bus.publish_agents(agents)
            if n % 6 == 0:
                await bus.maintain(streams)
        n += 1
        await asyncio.sleep(K.AGENT_RENEW_S)
