"""Conversation memory in a Dapr state store (``AGENTIA_MEMORY=dapr``; docs/dapr.md).

The session's Redis memory list is the journal; the state store holds the conversation up to
the turns that ended. A turn writes its items exactly as with Redis memory
(:class:`sessions.memory.RedisMemory`: kept unsaved until the turn's successful ending writes
them, atomically with that ending and fenced by the session lock, or a pause saves them; a
failed attempt writes nothing, a retry's ``START`` and a dead letter's ``ROLLBACK`` remove what
a pause saved). Posted messages land there too (``START``'s ``n|`` notes). At the start of a
session's next attempt, :class:`DaprMemory` moves every journal entry ahead of the current
turn's own into the state value ``<prefix>:<session>:items`` (read with its ETag and written
with first-write-wins, so of two concurrent movers one wins and the other finds the batch
moved), keeps the newest :data:`sessions.keys.MEMORY_MAXLEN` items there, then trims the moved
entries from the journal in a script that checks the session lock (:data:`TRIM`).

A mover that dies between its state write and its trim leaves the batch in the journal: the
state value records the last batch moved (``moved``: its entry count and SHA-1), so the next
mover finds those entries at the journal's head, writes only what follows them and trims
them all, never writing an entry twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import orjson
from agents.items import TResponseInputItem
from agents.memory.session_settings import SessionSettings

from sessions import keys as K
from sessions.errors import LockLost
from sessions.memory import RedisMemory

WRITE_TRIES = 3
"""State writes refused for a stale ETag (another mover won) before the attempt fails."""

# KEYS: memory, lock; ARGV: owner, entries moved, the last of them. Removes the journal's first
# entries once they are in the state store: only by the lock's holder (-2 otherwise), and only
# if they are still the ones moved (0 otherwise: nothing removed).
TRIM = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -2 end
local n = tonumber(ARGV[2])
if redis.call('LINDEX', KEYS[1], n - 1) ~= ARGV[3] then return 0 end
redis.call('LTRIM', KEYS[1], n, -1)
return 1
"""


async def connect_dapr(grpc_port: int) -> Any:
    """A Dapr client for the sidecar on ``127.0.0.1:<grpc_port>``. The SDK's client waits for
    the sidecar's ``/v1.0/healthz/outbound`` (``DAPR_HTTP_PORT``, at most
    ``DAPR_HEALTH_TIMEOUT`` s) with blocking calls: that wait runs in a thread first."""
    from dapr.aio.clients import DaprClient
    from dapr.clients.health import DaprHealth

    await asyncio.to_thread(DaprHealth.wait_for_sidecar)
    return DaprClient(address=f"127.0.0.1:{grpc_port}")


class DaprMemory(RedisMemory):
    """One session's memory for one attempt of a turn: the state store's items, then the
    journal's (module doc)."""

    session_settings: SessionSettings | None = None

    def __init__(self, client: Any, store: str, redis: Any, keys: K.Keys, session_id: str,
                 turn: int = 0, owner: str = "", max_items: int = K.MEMORY_MAXLEN) -> None:
        super().__init__(redis, keys, session_id, turn, max_items, owner)
        self.client, self.store = client, store
        self.state_key = f"{keys.prefix}:{session_id}:items"
        self._stored: list[TResponseInputItem] | None = None
        """The state store's items, read (and the journal moved) once per attempt."""
        self._trim = redis.register_script(TRIM)

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        stored = await self._load()
        items = [*stored, *await super().get_items()]
        return items[-(limit or self.max_items):]

    async def clear_session(self) -> None:
        await self.client.delete_state(self.store, self.state_key)
        self._stored = []
        await super().clear_session()

    async def _load(self) -> list[TResponseInputItem]:
        if self._stored is None:
            self._stored = await self._move()
        return self._stored

    async def _move(self) -> list[TResponseInputItem]:
        """Move the journal's entries ahead of this turn's into the state store; its items."""
        raw = await self._call(self.redis.lrange(self.key, 0, -1))
        n = next((i for i, r in enumerate(raw) if r.startswith(self.tag)), len(raw))
        batch = raw[:n]
        for tries in range(1, WRITE_TRIES + 1):
            got = await self.client.get_state(self.store, self.state_key)
            value = orjson.loads(got.data) if got.data else {"items": [], "moved": None}
            new = batch[_moved(value.get("moved"), batch):]
            if not new:
                break  # nothing to move, or moved already by a mover that died before its trim
            value = {"items": [*value["items"], *(_item(r) for r in new)][-self.max_items:],
                     "moved": [n, _digest(batch)]}
            if await self._write(orjson.dumps(value), got.etag or None, tries):
                break
        if batch and int(await self._call(self._trim(
                keys=[self.key, self.lock], args=[self.owner, n, batch[-1]]))) == -2:
            raise LockLost(self.session_id)
        return list(value["items"])

    async def _write(self, data: bytes, etag: str | None, tries: int) -> bool:
        """First-write-wins save; False when another write came first (and tries are left)."""
        from dapr.clients.exceptions import DaprInternalError
        from dapr.clients.grpc._state import Concurrency, StateOptions

        try:
            await self.client.save_state(
                self.store, self.state_key, data, etag=etag,
                options=StateOptions(concurrency=Concurrency.first_write),
                state_metadata={"ttlInSeconds": str(K.SESSION_TTL)})
        except DaprInternalError:
            if etag is None or tries >= WRITE_TRIES:
                raise
            return False
        return True


def _digest(entries: list[bytes]) -> str:
    return hashlib.sha1(b"\n".join(entries)).hexdigest()


def _moved(mark: Any, batch: list[bytes]) -> int:
    """How many of the batch's first entries the state store has already (``moved``: the count
    and digest of the last batch moved, whose trim may not have happened)."""
    if isinstance(mark, list) and len(mark) == 2 and 0 < mark[0] <= len(batch) \
            and _digest(batch[:mark[0]]) == mark[1]:
        return int(mark[0])
    return 0


def _item(raw: bytes) -> Any:
    return orjson.loads(raw.partition(b"|")[2])
