"""Conversation memory in a Dapr state store (``AGENTIA_MEMORY=dapr``; docs/dapr.md).

The Agents SDK's own ``agents.extensions.memory.DaprSession`` keeps the conversation, through
the sidecar's gRPC API, in the state store ``AGENTIA_DAPR_STATESTORE`` under the key
``<prefix>:<session>`` (Dapr prefixes it with the app id). What stays in Redis: the messages
posted into the session (operator/system ``message`` events, sessions/backend_redis.py) and
user turns held by a takeover, which the turn's start moves into the session's Redis memory
list (scripts.py ``START``). :class:`DaprMemory` shows those to the agent after the stored
conversation and moves them into the state store with the turn's first items.

Not as with Redis memory: a failed, cancelled or paused attempt's items are not rolled back
(a retried turn may repeat its user message), and writes are not fenced by the session lock.
Needs the ``dapr`` package (``pip install 'agentia[dapr]'``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from agents.items import TResponseInputItem
from agents.memory.session_settings import SessionSettings

from agentia.codes import BusUnavailable
from sessions import keys as K
from sessions.redis_client import REDIS_DOWN, is_down


async def connect_dapr(grpc_port: int) -> Any:
    """A Dapr client for the sidecar on ``127.0.0.1:<grpc_port>``. The SDK's client waits for
    the sidecar's ``/v1.0/healthz/outbound`` (``DAPR_HTTP_PORT``, at most
    ``DAPR_HEALTH_TIMEOUT`` s) with blocking calls: that wait runs in a thread first."""
    from dapr.aio.clients import DaprClient
    from dapr.clients.health import DaprHealth

    await asyncio.to_thread(DaprHealth.wait_for_sidecar)
    return DaprClient(address=f"127.0.0.1:{grpc_port}")


class DaprMemory:
    """One session's memory for one attempt of a turn, in a Dapr state store."""

    session_settings: SessionSettings | None = None

    def __init__(self, client: Any, store: str, redis: Any, keys: K.Keys,
                 session_id: str) -> None:
        from agents.extensions.memory import DaprSession

        # the model sees the newest MEMORY_MAXLEN items, as with Redis memory (the state value
        # itself keeps them all: the SDK stores the whole list as one value)
        self.inner = DaprSession(f"{keys.prefix}:{session_id}", state_store_name=store,
                                 dapr_client=client, ttl=K.SESSION_TTL,
                                 session_settings=SessionSettings(limit=K.MEMORY_MAXLEN))
        self.session_id = session_id
        self.redis = redis
        self.key = keys.memory(session_id)
        self.outage = False
        self._pending: list[bytes] | None = None
        """The Redis memory list's entries (messages moved in by START), read once."""

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        items = await self.inner.get_items(limit)
        return [*items, *await self._notes()]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        notes = await self._notes()
        if not items and not notes:
            return
        await self.inner.add_items([*notes, *items])
        if self._pending:  # moved: only what was read (nothing is added to it mid-turn)
            await self._call(self.redis.ltrim(self.key, len(self._pending), -1))
        self._pending = []

    async def pop_item(self) -> TResponseInputItem | None:
        return await self.inner.pop_item()

    def take_unsaved(self) -> list[bytes]:
        """Nothing: items are written as they are added."""
        return []

    async def save(self) -> None:
        """Nothing to write (items are written as they are added)."""

    async def clear_session(self) -> None:
        await self.inner.clear_session()
        await self._call(self.redis.delete(self.key))

    async def _notes(self) -> list[TResponseInputItem]:
        if self._pending is None:
            self._pending = list(await self._call(self.redis.lrange(self.key, 0, -1)))
        return [orjson.loads(raw.partition(b"|")[2]) for raw in self._pending]

    async def _call(self, op: Any) -> Any:
        try:
            return await op
        except (*REDIS_DOWN, AttributeError) as exc:
            if not is_down(exc):
                raise
            self.outage = True
            raise BusUnavailable() from exc
