"""A worker's reads of its inbound shards on a single Redis, asked for ahead (issue 13, session
12): the worker's half of sessions/delivery_reads.py.

A worker reads its shards in a loop, one ``XREADGROUP … >`` per batch of turns; each read it
sends is a wake-up of Redis (a socket found readable, a request parsed), one per turn it takes
at the pace turns come. Here the worker's reader connection carries up to :data:`AHEAD` reads
at once: Redis answers the first when a turn comes, takes the next from the connection's buffer
in the same loop without reading the socket again, and blocks on it. More are sent in one write
whenever fewer than :data:`LOW` are left.

Room: a read in flight claims up to its ``COUNT`` from each shard the moment Redis serves it,
whether the worker reads the reply yet or not. So the reads in flight together never ask for
more than the room the caller gives (``AGENTIA_CONCURRENCY`` less the turns it runs): a worker
never holds more turns than it has room for (as with one read at a time, a worker with less room
than shards may ask one each). The reads in flight are answered in turn, each waiting ``BLOCK``
from when the one before it was answered: the caller's loop still comes back every ``block_ms``
(to reclaim, to stop).

Nothing claimed is lost: an entry is in the worker's pending list from the moment a read takes
it. A reply lost with its connection (an error, a cancelled call) leaves its entries there, to
be reclaimed after a lease like a dead worker's, as a single read's would; :meth:`close` (the
worker stopping) takes the answers already arrived, for the worker to run or hand off, and drops
the reads still waiting (Redis forgets a closed connection's blocked reads: they claim nothing).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from sessions import keys as K
from sessions.roles import Claimed

ClaimOf = Callable[[str, bytes, dict[bytes, bytes], str], Claimed]
"""(stream, entry id, the entry's fields, agent) -> the claim (sessions/queue_redis.py's)."""

AHEAD = 8
"""Reads in flight on a worker's reader connection at most."""
LOW = 4
"""Fewer reads in flight than this: send more, up to :data:`AHEAD`, in one write."""


class ClaimsAhead:
    """One worker's reader of its shards (``agent_of``: each shard's stream and its agent)
    with reads in flight."""

    def __init__(self, redis: Any, agent_of: dict[bytes, str], consumer: str, block_ms: int,
                 claim_of: ClaimOf) -> None:
        self.redis, self.consumer, self.block_ms = redis, consumer, block_ms
        self.agent_of, self.claim_of = agent_of, claim_of
        self.conn: Any = None
        self.client_id: int | None = None
        """The reader connection's id (``CLIENT ID``), for :meth:`wake`."""
        self.woken = False
        self.asked: deque[int] = deque(maxlen=AHEAD)
        """The most each read in flight can claim (its COUNT times the shards), in order."""

    def _read(self, count: int) -> tuple[Any, ...]:
        streams = list(self.agent_of)
        return ("XREADGROUP", "GROUP", K.GROUP, self.consumer, "COUNT", count, "BLOCK",
                self.block_ms, "STREAMS", *streams, *[">"] * len(streams))

    def _more(self, room: int) -> list[tuple[Any, ...]]:
        """The reads to send now: none while :data:`LOW` are in flight; else up to
        :data:`AHEAD` in all, asking together for no more than ``room`` less what those in
        flight ask for (at least one read when none is in flight: the caller has room)."""
        if len(self.asked) >= LOW:
            return []
        per, slots = len(self.agent_of), AHEAD - len(self.asked)
        spare = room - sum(self.asked)
        count = max(1, spare // (slots * per))
        n = min(slots, spare // (count * per))
        if n <= 0:
            if self.asked:
                return []
            n, count = 1, 1
        self.asked.extend([count * per] * n)
        return [self._read(count)] * n

    async def claim(self, room: int) -> list[Claimed]:
        """The turns of the next read in flight (more sent first when few are): none when its
        block ran out. ``room``: how many turns the worker could start now. A dropped
        connection is re-made once, the reads sent again (what a lost reply claimed stays
        pending: reclaimed); else raises what the connection or Redis raises (NOGROUP: the
        caller makes the groups), the reads in flight dropped with their connection. Nothing
        once :meth:`wake` was called (the caller is stopping)."""
        if self.woken:
            return []
        try:
            return await self._claim(room)
        except (ConnectionError, TimeoutError):
            return await self._claim(room)

    async def _claim(self, room: int) -> list[Claimed]:
        try:
            fresh = self.conn is None
            if fresh:  # its id asked for in the same write as its first reads (no wait)
                self.conn = await self.redis.connection_pool.get_connection()
            if more := [*([("CLIENT", "ID")] if fresh else []), *self._more(room)]:
                await self.conn.send_packed_command(self.conn.pack_commands(more),
                                                    check_health=False)
            if fresh:
                self.client_id = int(await self.conn.read_response())
                if self.woken:  # woken before the id was known: :meth:`wake` could not
                    await self._unblock()
            reply = await self.conn.read_response()
            self.asked.popleft()
            if isinstance(reply, ResponseError):
                raise reply
        except BaseException:
            await self._drop()
            raise
        return self._claims(reply)

    def _claims(self, reply: Any) -> list[Claimed]:
        if not reply:
            return []
        # RESP3 answers {stream: entries}, RESP2 [[stream, entries]]; an entry is
        # [id, [field, value, ...]]
        pairs = reply.items() if isinstance(reply, dict) else ((p[0], p[1]) for p in reply)
        out: list[Claimed] = []
        for stream, rows in pairs:
            agent = self.agent_of.get(stream, K.DEFAULT_AGENT)
            for rid, flat in rows:
                f = dict(zip(flat[::2], flat[1::2], strict=True))
                out.append(self.claim_of(stream.decode(), rid, f, agent))
        return out

    async def wake(self) -> None:
        """The caller is stopping: answer the read blocked now (if any) as a timeout would,
        send no more. What an answered read claimed is read by :meth:`close` as before."""
        self.woken = True
        if self.conn is not None and self.client_id is not None:
            await self._unblock()

    async def _unblock(self) -> None:
        with suppress(Exception):  # not reachable: the read ends with its block anyway
            await self.redis.execute_command("CLIENT", "UNBLOCK", self.client_id)

    async def close(self) -> list[Claimed]:
        """Stop reading: the turns of the answers already arrived (to run or hand off), the
        reads still waiting dropped with the connection."""
        got: list[Claimed] = []
        with suppress(Exception):  # what is not read stays pending: reclaimed after a lease
            while self.conn is not None and self.asked and await self.conn.can_read():
                reply = await self.conn.read_response()
                self.asked.popleft()
                if not isinstance(reply, ResponseError):
                    got += self._claims(reply)
        await self._drop()
        return got

    async def _drop(self) -> None:
        conn, self.conn, self.client_id = self.conn, None, None
        self.asked.clear()
        if conn is not None:
            await conn.disconnect()
            await self.redis.connection_pool.release(conn)
