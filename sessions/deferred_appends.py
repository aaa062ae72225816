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
