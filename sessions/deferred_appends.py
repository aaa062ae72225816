"""Appends that ride on the session's next tick of chunks (issue 13, session 12).

The ``speaking`` state (sessions/turn_log.py) is appended just before the text it announces;
a worker sent it as a script of its own (a round trip and a wake-up of Redis per turn, for an
event that nobody waits for apart from its text). On a single Redis, with the session's nodes
known alive, its ``APPEND`` (fenced, idempotent by its append id, its fan-out inside the
script) is now kept and sent first in the pipeline of the session's next tick of chunks
(sessions/log_redis.py ``stream_chunks``), so the log and the nodes get it in the same round
trip as the text, before it. Any other append of the session, or a new attempt of it, sends it
first, apart (order holds). A script cache found empty (a Redis restarted) runs it apart
after the tick (the log's order is kept; the nodes see ``speaking`` after that tick's text,
once). A deferred append the lock refuses (-2: another worker holds the session) is dropped:
the turn's next fenced append raises :class:`sessions.roles.LockLost` as before.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError

from sessions.delivery_redis import RedisNodeDelivery


@dataclass(frozen=True, slots=True)
class Deferred:
    """An ``APPEND`` kept for the session's next tick: its keys and arguments, the events'
    bytes, and the nodes its script copies them to."""

    sid: str
    keys: list[str]
    args: list[Any]
    raws: list[bytes]
    inline: list[bytes]
    reply: asyncio.Future[Any] | None = None
    """A turn's ending (:meth:`DeferredAppends._ride_tick`): its script's reply, awaited by
    the ending."""


class DeferredAppends(RedisNodeDelivery):
    """The keeping and sending of deferred appends (a base of the session log on Redis)."""

    def _defer(self, d: Deferred) -> None:
        self._deferred[d.sid] = d  # one per session at most: its next append sends it first

    async def _send_deferred(self, sid: str) -> None:
        """The session's deferred append, apart (before another append of the session)."""
        d = self._deferred.pop(sid, None)
        if d is not None:
            await self._deferred_ran(d, await self._run_script(self._append, d.keys, d.args))

    def _take_deferred(self, sids: list[str], pipe: Any) -> list[Deferred]:
        """The deferred appends of ``sids``, queued first on ``pipe`` (a tick's pipeline)."""
        taken = [self._deferred.pop(sid) for sid in sids if sid in self._deferred]
        for d in taken:
            pipe.execute_command("EVALSHA", self._append.sha, len(d.keys), *d.keys, *d.args)
        return taken

    def _keep_deferred(self, taken: list[Deferred]) -> None:
        """A tick that failed: keep its deferred appends for the next (idempotent: an append
        that ran is not appended again)."""
        for d in taken:
            self._deferred.setdefault(d.sid, d)

    async def _deferred_replies(self, taken: list[Deferred], replies: list[Any]) -> None:
        """What a tick's pipeline answered: its deferred appends' replies first, then the
        rest, any error among which is raised (as a pipeline raising on error would)."""
        for d, res in zip(taken, replies, strict=False):
            if isinstance(res, NoScriptError):
                res = await self._run_script(self._append, d.keys, d.args)
            elif isinstance(res, Exception):
                raise res
            await self._deferred_ran(d, res)
        for res in replies[len(taken):]:
            if isinstance(res, Exception):
                raise res

    async def _deferred_ran(self, d: Deferred, res: Any) -> None:
        offset = int(res[0])
        if offset <= 0:  # -2: the lock is another's; the turn's next fenced append says so
            return
        if rest := [n for n in res[4:] if n not in d.inline]:  # nodes the script did not get
            await self._fan_out_all(d.sid, offset - len(d.raws) + 1, d.raws, rest)
        self._remember_nodes(d.sid, list(res[4:]), time.monotonic())

    # A turn's ending rides the worker's next tick (issue 13, session 14): the last text and
    # the ending in one pipeline, where they were two round trips after it (the flush of the
    # last pieces, then the ending's script), each a read, a reply and a wake-up of the
    # edge's delivery read.

    def rides_tick(self, sid: str) -> bool:
        """Whether an ending of ``sid`` may ride the next tick: on a single Redis, the
        session's nodes known alive (its fan-out and the claim's XACK inside the script)."""
        return self._inline_targets(sid) is not None

    async def _ride_tick(self, d: Deferred) -> Any:
        """Send ``d`` (an ending, with its ``reply`` future) after the chunks of the next tick
        (the caller made sure one comes: sessions/coalescer.py ``carry``) and return its
        script's reply; a tick that fails raises its error here."""
        assert d.reply is not None
        if d.sid in self._endings:  # never by the worker (one ending a turn): apart, not lost
            return await self._run_script(self._append, d.keys, d.args)
        self._endings[d.sid] = d
        try:
            return await d.reply
        except asyncio.CancelledError:
            if self._endings.get(d.sid) is d:  # not sent: nothing of it reaches Redis
                del self._endings[d.sid]
            raise

    def _take_endings(self) -> list[Deferred]:
        """Every ending waiting, for this tick (taken before its first await, so one handed
        over after that waits for the next tick, which ``carry`` makes run)."""
        taken = list(self._endings.values())
        self._endings.clear()
        return taken

    def _queue_endings(self, ends: list[Deferred], pipe: Any) -> None:
        """Queued last on a tick's pipeline: after the chunks, as the text before the reply."""
        for d in ends:
            pipe.execute_command("EVALSHA", self._append.sha, len(d.keys), *d.keys, *d.args)

    async def _endings_replied(self, ends: list[Deferred], replies: list[Any]) -> None:
        """Each ending's reply (the pipeline's last ones) to its waiter; a flushed script
        cache runs it apart (it did not run)."""
        for d, res in zip(ends, replies, strict=True):
            assert d.reply is not None
            try:
                if isinstance(res, NoScriptError):
                    res = await self._run_script(self._append, d.keys, d.args)
            except Exception as exc:  # the ending's own error, to its waiter
                res = exc
            if d.reply.done():
                continue
            if isinstance(res, Exception):
                d.reply.set_exception(res)
            else:
                d.reply.set_result(res)

    @staticmethod
    def _endings_failed(ends: list[Deferred], exc: BaseException) -> None:
        """A tick that failed before its replies: its endings' waiters get its error."""
        for d in ends:
            if d.reply is not None and not d.reply.done():
                d.reply.set_exception(exc if isinstance(exc, Exception) else
                                      RuntimeError("the tick was cancelled"))
