"""A turn's attempt on Redis, start and end (:class:`sessions.roles.WorkerBus`): ``START``
(sessions/turn_scripts.py) takes the session lock, counts the attempt, appends its
``turn_start`` and reads the agent's memory; the ending (scripts.py ``APPEND``) writes the
reply with the memory items, frees the lock when no turn is pending, and the inbound entry is
acked in the same round trip as the ending's fan-out (on a single Redis both scripts copy
their events to the session's nodes known alive themselves, and the ending acks the entry:
no round trip after either). A turn's round trips are counted in
docs/architecture.md ("A turn's round trips")."""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from sessions import events as E
from sessions import keys as K
from sessions.log_redis import RedisSessionLog
from sessions.memory_cache import MemoryCache
from sessions.redis_core import down
from sessions.roles import Ended, LockLost, Partial, Started
from sessions.turns_redis import turn_of


class RedisAttempts(RedisSessionLog):
    _memories: MemoryCache | None = None

    def memory_cache(self) -> MemoryCache:
        """The decoded memory of the sessions this process ran, checked by ``START``
        (sessions/memory_cache.py)."""
        if self._memories is None:
            self._memories = MemoryCache()
        return self._memories

    @down
    async def end_turn(self, sid: str, events: E.Event | list[E.Event], turn: int,
                       owner: str, release: bool = True, remember: list[bytes] | None = None,
                       ack: tuple[Any, ...] = (), tick: bool = False) -> Ended:
        """Append the ending of ``turn`` (:meth:`append` with ``done``) and, with ``release``,
        free the session lock in the same script when no turn is pending after it (what the
        worker's next look at the turns and ``release_lock`` would do: two round trips fewer
        per turn). ``remember``: the attempt's memory items not written yet
        (:meth:`sessions.memory.RedisMemory.take_unsaved`), written to the session's memory
        in the same script (fenced and idempotent with the ending). ``ack``: the claim's XACK
        (:meth:`sessions.queue_redis.RedisClaim.ack_command`), sent in the ending's fan-out
        pipeline once the script (and its WAIT, when asked) answered that the lock was freed:
        the turn is durable before its entry is acked, one round trip fewer per turn. On a
        Cluster the entry's shard is another slot and the caller acks apart (``acked`` False).
        Returns whether the lock was freed, whether ``ack`` ran and, with ``release``, the
        next pending turn when there is one (read in the same script: the worker runs it
        without reading the pending turns again). ``tick``: the caller's worker carries the
        ending in its next tick (sessions/coalescer.py ``carry``, called in the same step,
        when :meth:`rides_tick`): after the turn's last text, in its pipeline."""
        offset, ended = await self._append_events(sid, events, turn, owner, "",
                                                  release=release, remember=remember or [],
                                                  ack=ack, tick=tick)
        if offset > 0 and self._memories is not None:  # written: the cache may take them
            self._memories.wrote(sid, turn, owner, remember or [])
        return ended

    @down
    async def start_attempt(self, sid: str, turn: int, owner: str, *, max_attempts: int,
                            again: bool = False, then: list[E.Event] | None = None,
                            said: str = "", lease_ms: int | None = None,
                            read_memory: bool = False, first: bool = False) -> Started:
        """Begin an attempt of ``turn`` (as :meth:`begin_attempt`) and, unless it is cancelled
        or past ``max_attempts``, append its ``turn_start`` (and the events ``then``, the
        turn's ``state thinking``) and start its run's partial buffer, in one script
        (``START``). During an operator takeover it does not start: ``said`` (the turn's
        text) is queued for the agent's memory and the result is ``held``. With
        ``lease_ms`` the session lock is taken first (as :meth:`try_lock`, in the same
        script: one round trip fewer per turn) and a lock another worker holds gives a
        ``busy`` result, nothing written; without, the caller holds the lock already. With
        ``read_memory`` a started attempt's ``memory`` is the session's memory items as the
        script left them (decoded, oldest first; shared with :meth:`memory_cache`: read
        only): the agent's first memory read, in the same round trip, and no item read or
        decoded when the memory is at the version this process holds decoded. With
        ``first`` the turn is known by its shard entry only: START
        checks that it is the session's first pending turn (else a ``stale`` result, nothing
        written, no lock taken; ``busy`` when another worker holds the lock and a turn is
        pending, as the START of that turn would answer) and returns it read (``turn``;
        ``said`` may then be empty): the worker's read of the pending turns before START, one
        round trip fewer a turn.
        Raises :class:`LockLost` if the lock is not ``owner``'s (without ``lease_ms``)."""
        k = self.keys
        more = [orjson.dumps(e) for e in then or ()]
        # with ``first`` and no text given, START makes the note from the turn it reads
        note = orjson.dumps({"role": "user", "content": said}) if said or not first else b""
        await self._webhook_mark(sid)
        if self._deferred:
            await self._send_deferred(sid)  # an earlier attempt's, kept for a tick: first
        keys = [k.meta(sid), k.memory(sid), k.lock(sid), k.log(sid), k.nodes(sid),
                k.partial(sid), k.notes(sid), k.turns(sid)]
        inline = self._inline_targets(sid)  # the fan-out in START (single Redis), as APPEND
        held = self.memory_cache().get(sid) if read_memory else None
        fan: list[Any] = ["", ""]
        if inline is not None:
            keys += [k.delivery(n.decode()) for n in inline]
            fan = [sid, K.DELIVERY_MAXLEN]
        res = await self._run_script(
            self._start, keys=keys,
            args=[turn, owner, "1" if again else "", max_attempts, self.log_maxlen,
                  K.SESSION_TTL, secrets.token_hex(4), K.MEMORY_MAXLEN, note,
                  "" if lease_ms is None else lease_ms,
                  (held.version() if held else "1") if read_memory else "", *fan,
                  "1" if first else "", *more])
        if int(res[0]) == -2:
            raise LockLost(sid)
        if int(res[0]) == -3:
            return Started(0, False, "", busy=True)
        if int(res[0]) == -5:
            return Started(0, False, "", stale=True)
        attempt, cancelled, offset = int(res[0]), int(res[1]) == 1, int(res[2])
        read = turn_of(sid, b"0-%d" % turn, res[4]) if first and len(res) > 4 else None
        if offset <= 0:
            return Started(attempt, cancelled, "", held=int(res[1]) == 2, turn=read)
        n, at, memory = int(res[5]), 6, None
        if read_memory:
            at, cache = 7, self.memory_cache()
            memory = cache.loaded(sid, res[6], None if n < 0 else list(res[7:7 + n]), held)
            cache.started(sid, turn, owner, res[6])
        raws = [orjson.dumps(E.turn_start(turn, attempt)), *more]
        nodes = res[at + max(n, 0):]
        if inline is None:
            await self._fan_out_all(sid, offset - len(more), raws, nodes)
        else:  # a node the script did not get: its fan-out after it, as before
            if rest := [x for x in nodes if x not in inline]:
                await self._fan_out_all(sid, offset - len(more), raws, rest)
            self._remember_nodes(sid, nodes, time.monotonic())
        return Started(attempt, cancelled, res[3].decode(), memory=memory, turn=read)

    @down
    async def partial(self, sid: str) -> Partial | None:
        """The running turn's text so far (None: no turn running, or no text yet), up to the
        first piece missing (:func:`_missing`): a restart loses the AOF's last second and a
        failover the replication lag, so the buffer may lack a piece before later ones; what
        follows a missing one is left to the turn's ending, never shown with a hole."""
        rows = await self.redis.lrange(self.keys.partial(sid), 0, -1)
        if len(rows) < 2:
            return None
        run = rows[0]
        tag = run + b"#"
        seq, parts = 0, []
        for row in rows[1:]:  # another run's (a worker that lost the lock) are skipped
            if row.startswith(tag):
                at, _, text = row[len(tag):].partition(b"|")
                if _missing(seq, int(at)):
                    break
                seq = int(at)
                parts.append(text)
        if not parts:
            return None
        turn, attempt, _ = run.split(b":", 2)
        return Partial(int(turn), int(attempt), run, seq, b"".join(parts).decode())


def _missing(last: int, seq: int) -> bool:
    """Whether the partial buffer lacks a piece between ``last`` and ``seq``: the worker
    pushes every ``PARTIAL_EVERY``-th piece (sessions/coalescer.py), so two such seqs that are
    not one step apart have one missing between them (the first after 0 is ``PARTIAL_EVERY``).
    Pieces pushed at other seqs (tools and tests that write the buffer themselves) are not
    checked."""
    step = K.PARTIAL_EVERY
    return last % step == 0 and seq % step == 0 and seq != last + step
