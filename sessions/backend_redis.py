"""What a backend does to sessions through the control plane (docs/backend.md), on Redis:
post a message into a session, delete a session or all of a user's sessions, and read who is
connected (presence). Built on a :class:`~sessions.bus.Bus` (its client, keys, scripts and
node delivery), so every write reaches devices the way a turn's events do: the session log,
then the delivery stream of each node holding the session.

Presence is written by the edges (:class:`PresenceWriter`, batched) and read here.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import orjson

from sessions import backend_scripts, presence_events
from sessions import events as E
from sessions import keys as K
from sessions.bus import Bus, Forbidden
from sessions.redis_core import down

DELETED = b"deleted"
"""The notice a node's delivery stream carries for a deleted session (field ``x``)."""
USER_ROUNDS = 20
"""Rounds of :meth:`Backend.delete_user` at most (each reads the user's indexes again)."""
USER_BATCH = 500
"""Sessions read from a user's index per round."""


@dataclass(frozen=True, slots=True)
class Device:
    node: str
    since: float
    user_agent: str | None


@dataclass(frozen=True, slots=True)
class Presence:
    connected: int
    devices: list[Device]
    voice: bool
    operator: bool = False
    """An operator's connection (a token with ``sessions:operate``) is in the session."""


@dataclass(frozen=True, slots=True)
class Takeover:
    active: bool
    by: str
    offset: int
    """The ``takeover`` event's offset; 0 when the session was in that state already."""


class Backend:
    """The backend operations of one deployment (one Redis, one key prefix)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.redis: Any = bus.redis
        self.keys = bus.keys
        self._post = bus.redis.register_script(backend_scripts.POST)
        self._delete = bus.redis.register_script(backend_scripts.DELETE)
        self._takeover = bus.redis.register_script(backend_scripts.TAKEOVER)

    async def post_message(self, sid: str, role: str, text: str, by: str) -> int | None:
        """Append a ``message`` event and queue it for the agent's next turn; its offset,
        or None when the session does not exist."""
        posted = await self.post_message_once(sid, role, text, by, "")
        return None if posted is None else posted[0]

    @down
    async def post_message_once(self, sid: str, role: str, text: str, by: str,
                                client_id: str) -> tuple[int, bool] | None:
        """:meth:`post_message`, idempotent per ``client_id`` ("" = not deduplicated; ids
        share the session's set of remembered ``send`` ids, so callers namespace them):
        (offset, duplicate), None when the session does not exist."""
        k = self.keys
        raw = orjson.dumps(E.message(role, text, by, time.time()))
        note = orjson.dumps(E.message_note(role, text, by))
        await self.bus._webhook_mark(sid)
        res = await self.bus._run_script(
            self._post,
            keys=[k.meta(sid), k.log(sid), k.nodes(sid), k.notes(sid), k.client_ids(sid)],
            args=[raw, self.bus.log_maxlen, K.SESSION_TTL, note, K.NOTES_KEPT, client_id,
                  K.CLIENT_IDS_KEPT])
        offset = int(res[0])
        if offset < 0:
            return None
        if int(res[1]):
            return offset, True
        await self.bus._fan_out(sid, offset, raw, res[2:])
        return offset, False

    @down
    async def takeover(self, sid: str, by: str, active: bool) -> Takeover | None:
        """Take the session over for operator ``by`` (the agent runs none of its turns, a
        running one is cancelled) or give it back (``active`` False); None when the session
        does not exist."""
        k = self.keys
        raw = orjson.dumps(E.takeover(active, by, time.time()))
        await self.bus._webhook_mark(sid)
        res = await self.bus._run_script(
            self._takeover, keys=[k.meta(sid), k.log(sid), k.nodes(sid), k.turns(sid)],
            args=[raw, self.bus.log_maxlen, K.SESSION_TTL, by if active else ""])
        offset = int(res[0])
        if offset < 0:
            return None
        if int(res[1]):  # the worker running it stops now
            await self.redis.publish(self.keys.cancel_channel(), f"{sid} {int(res[1])}")
        if offset:
            await self.bus._fan_out(sid, offset, raw, res[2:])
        return Takeover(active, by, offset)

    @down
    async def delete_session(self, sid: str, owner: str = "") -> str | None:
        """Delete every key of the session (one script, one slot), cancel its running turn,
        tell the nodes holding it (their devices are closed with 4506) and drop it from its
        owner's indexes. Returns the owner it had, None when it did not exist; raises
        :class:`Forbidden` when ``owner`` is given and is not the session's."""
        res = await self.bus._run_script(self._delete, keys=self.keys.session_keys(sid),
                                         args=[owner])
        if res[0] == b"forbidden":
            raise Forbidden(sid)
        had, turn, nodes = res[0].decode(), int(res[1]) if len(res) > 1 else 0, res[2:]
        if turn:  # the worker running it stops now (its later writes fail: DELETE's fence)
            await self.redis.publish(self.keys.cancel_channel(), f"{sid} {turn}")
        await self._notify(sid, nodes)
        if had:
            await self._unindex(had, [sid])
        return had or None

    async def _notify(self, sid: str, nodes: list[bytes]) -> None:
        live = await self.bus._live_nodes(nodes) if nodes else []
        if not live:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for node in live:
                pipe.xadd(self.keys.delivery(node.decode()), {"s": sid, "x": DELETED},
                          maxlen=K.DELIVERY_MAXLEN, approximate=True)
            await pipe.execute()

    async def _unindex(self, user: str, sids: list[str]) -> None:
        uk = self.bus.user_keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in (self.keys.user_sessions(user), uk.live(user), uk.new(user)):
                pipe.zrem(key, *sids)
            await pipe.execute()

    @down
    async def delete_user(self, user: str) -> int:
        """Delete every session the user's indexes name (the sessions list, by last activity,
        and the live-session count of the per-user limits), USER_BATCH at a time, until both
        are empty (USER_ROUNDS at most). Sessions of another owner found there are only
        dropped from the index. Returns how many sessions were deleted."""
        uk, deleted = self.bus.user_keys, 0
        indexes = (self.keys.user_sessions(user), uk.live(user))
        for _ in range(USER_ROUNDS):
            sids: set[str] = set()
            for key in indexes:
                sids.update(s.decode() for s in
                            await self.redis.zrange(key, 0, USER_BATCH - 1))
            if not sids:
                break
            for sid in sorted(sids):
                with contextlib.suppress(Forbidden):  # another's: only leaves the index
                    deleted += await self.delete_session(sid, user) is not None
            await self._unindex(user, sorted(sids))
        await self.redis.delete(*indexes, uk.new(user))
        return deleted

    @down
    async def presence(self, sid: str) -> Presence:
        """Devices connected to the session (entries of dead nodes are dropped) and whether
        a voice call holds it (a live ``voice-`` node in its nodes)."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(k.presence(sid))
            pipe.hkeys(k.nodes(sid))
            devices, nodes = await pipe.execute()
        rows = [orjson.loads(v) for v in devices.values()]
        ops = [r for r in rows if r.get("op")]
        rows = [r for r in rows if not r.get("op")]
        devices = {m: v for m, v in devices.items() if not orjson.loads(v).get("op")}
        names = sorted({r["node"].encode() for r in rows + ops} | set(nodes))
        alive = set(await self._alive(names))
        dead = [m for m, r in zip(devices, rows, strict=True)
                if r["node"].encode() not in alive]
        if dead:
            await self.redis.hdel(k.presence(sid), *dead)
        live = [Device(r["node"], float(r["since"]), r.get("ua"))
                for r in rows if r["node"].encode() in alive]
        live.sort(key=lambda d: d.since)
        voice = any(n.startswith(b"voice-") and n in alive for n in nodes)
        operator = any(r["node"].encode() in alive for r in ops)
        return Presence(len(live), live[:K.PRESENCE_LISTED], voice, operator)

    async def _alive(self, nodes: list[bytes]) -> list[bytes]:
        if not nodes:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for n in nodes:
                pipe.exists(self.keys.node_alive(n.decode()))
            found = await pipe.execute()
        return [n for n, ok in zip(nodes, found, strict=True) if ok]


class PresenceWriter:
    """An edge's devices in their sessions' presence hashes, written in batches (the edge
    flushes every half second with its users' session lists, off the handshake path)."""

    MAX_UA = 200
    """Characters of a User-Agent kept."""

    def __init__(self, bus: Bus, node: str) -> None:
        self.bus = bus
        self.node = node
        self.joined: dict[tuple[str, str], bytes] = {}
        self.left: set[tuple[str, str]] = set()
        self.again: set[str] = set()
        """Sessions whose ``presence`` event waits for its rate limit (presence events on;
        sessions/presence_events.py): asked again at each flush."""

    def member(self, conn: object) -> str:
        return f"{self.node}:{id(conn):x}"

    def join(self, sid: str, conn: object, since: float, user_agent: str | None,
             operator: bool = False) -> None:
        key = (sid, self.member(conn))
        self.left.discard(key)
        ua = user_agent[:self.MAX_UA] if user_agent else None
        row: dict[str, object] = {"node": self.node, "since": since, "ua": ua}
        if operator:  # an operator's connection: not one of the user's devices
            row["op"] = True
        self.joined[key] = orjson.dumps(row)

    def leave(self, sid: str, conn: object) -> None:
        key = (sid, self.member(conn))
        if self.joined.pop(key, None) is None:
            self.left.add(key)

    @down
    async def flush(self) -> None:
        """Write what changed since the last flush (kept for the next one if Redis fails,
        bounded: past 100,000 pending changes the oldest are dropped), then, with presence
        events on, the ``presence`` events of the sessions it changed."""
        changed = await self._write()
        if self.bus.presence_events:
            await self._events(changed)

    async def _events(self, changed: set[str]) -> None:
        sids, self.again = changed | self.again, set()
        if not sids:
            return
        try:
            self.again = set(await presence_events.record(self.bus, sorted(sids)))
        except Exception:
            if len(sids) < 100_000:
                self.again = sids
            raise

    async def _write(self) -> set[str]:
        """The presence hash writes; the sessions written to."""
        joined, left = self.joined, self.left
        if not joined and not left:
            return set()
        self.joined, self.left = {}, set()
        k = self.bus.keys
        try:
            async with self.bus.redis.pipeline(transaction=False) as pipe:
                for (sid, member), value in joined.items():
                    pipe.hset(k.presence(sid), member, value)
                for sid in {sid for sid, _ in joined}:  # one EXPIRE per session and flush
                    pipe.expire(k.presence(sid), K.SESSION_TTL)
                for sid, member in left:
                    pipe.hdel(k.presence(sid), member)
                await pipe.execute()
        except Exception:
            if len(self.joined) + len(joined) < 100_000:
                self.joined = {**joined, **self.joined}
            if len(self.left) + len(left) < 100_000:
                self.left |= left - set(self.joined)
            raise
        return {sid for sid, _ in joined} | {sid for sid, _ in left}
