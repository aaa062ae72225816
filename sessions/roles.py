"""The bus by role: one small Protocol per role a process plays, and the values they carry.

* :class:`SessionLog`: sessions and their logs (open, append, read a range, meta). Edges,
  the voice bridge, workers and the control plane.
* :class:`NodeDelivery`: per-node delivery streams and registration. Edges and voice calls.
* :class:`TurnQueue`: the inbound shards; a claimed entry carries its own ``ack()``,
  ``nack()`` and ``dead_letter()`` (acknowledging is separate from receiving). Workers.
* :class:`TurnState`: a session's lock, pending turns and attempts, as a worker runs them.
* :class:`AgentDirectory`: the agent registry as workers publish it (sessions/registry.py).
* :class:`Approvals`: the pause record of a turn waiting for a person (``approvals.py``).

The Redis implementations live beside them (``log_redis.py``, ``delivery_redis.py``,
``queue_redis.py``, ``turns_redis.py``, ``agents_redis.py``); :class:`sessions.bus.Bus`
composes them.
Every Redis command of the bus is inside those modules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sessions.errors import AgentMismatch as AgentMismatch
from sessions.errors import Forbidden as Forbidden
from sessions.errors import LockLost as LockLost
from sessions.errors import Missing as Missing
from sessions.errors import UnknownAgent as UnknownAgent
from sessions.events import Event
from sessions.pause_records import Decision as Decision
from sessions.pause_records import PauseRecord as PauseRecord
from sessions.pause_records import Request as Request

if TYPE_CHECKING:
    from sessions.memory import RedisMemory

Inbound = tuple[str, int]
"""One inbound shard: (agent, shard number)."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    epoch: str
    offset: int
    agent: str = ""
    """The session's agent ("" only for a session created while no agent was registered)."""


@dataclass(frozen=True, slots=True)
class Submitted:
    offset: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Turn:
    session: str
    offset: int
    client_id: str
    text: str
    user: str
    source: str
    ts: float
    """When the turn was accepted (unix seconds), for latency metrics."""
    agent: str = ""
    """The agent that runs it (the session's; the worker fills it in from the shard)."""
    tp: str = ""
    """The W3C traceparent of whoever submitted it ("" when tracing is off: agentia/tracing.py)."""
    unread: bool = False
    """Only ``session`` and ``offset`` are known (from its shard entry): the attempt's START
    checks that it is the first pending turn and reads the rest (``start_attempt`` ``first``)."""

    @classmethod
    def named(cls, session: str, offset: int) -> Turn:
        """The turn a shard entry names, known by its offset only (``unread``)."""
        return cls(session, offset, "", "", "", "", 0.0, unread=True)


@dataclass(frozen=True, slots=True)
class Replay:
    events: list[tuple[int, bytes]]
    recovered: bool
    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Started:
    """An attempt of a turn begun: its number, whether the turn was cancelled already, and
    the run id its turn_start opened (empty when none was appended: cancelled, or past the
    attempts)."""

    attempt: int
    cancelled: bool
    run: str
    held: bool = False
    """An operator holds the session (takeover): the turn is not run."""
    busy: bool = False
    """Another worker holds the session's lock (asked to take it): nothing was begun."""
    memory: list[Any] | None = None
    """The session's memory items as START left them (decoded, oldest first; read only: a
    worker's cache holds them, sessions/memory_cache.py), when asked (``read_memory``) and
    started: the agent's first memory read."""
    turn: Turn | None = None
    """The turn as START read it (``first``): its text, user, source, time."""
    stale: bool = False
    """With ``first``: the turn is not the session's first pending one (ended already, or
    another is ahead of it): nothing was begun, the lock not taken."""


@dataclass(frozen=True, slots=True)
class Ended:
    """A turn's ending written (``end_turn``): whether it freed the session lock (no turn was
    pending after it), whether the claim's ack went with it, and the turn pending after it."""

    released: bool
    acked: bool = False
    next: Turn | None = None
    """The session's next pending turn (an ending asked to free the lock that kept it)."""

    def __bool__(self) -> bool:
        """Whether the lock was freed (what ``end_turn`` answered before it answered this):
        test ``is None``, not truth, for an optional one."""
        return self.released


@dataclass(frozen=True, slots=True)
class Partial:
    """A running turn's reply text so far: its chunks ``1 … seq`` of run ``run``."""

    turn: int
    attempt: int
    run: bytes
    """``<turn>:<attempt>:<nonce>``: one run of one attempt (an attempt run again after an
    outage is a new run)."""
    seq: int
    text: str


@dataclass(frozen=True, slots=True)
class ChunkAt:
    """Where a delivered ``chunk`` belongs: its run and its place in the run."""

    turn: int
    attempt: int
    run: bytes
    seq: int


@dataclass(frozen=True, slots=True)
class Delivered:
    """One entry of a node's delivery stream: a log event (``offset`` > 0, ``chunk`` None),
    a running turn's chunk (``offset`` 0, ``chunk`` set; ``event`` is its frame) or a notice
    about the whole session (``notice`` set, e.g. ``deleted``; ``frame``: ``event`` is an
    off-log frame for the session's clients)."""

    id: bytes
    session: str
    offset: int
    event: bytes
    chunk: ChunkAt | None = None
    notice: str = ""


Opening = tuple[str, str, str, bool] | tuple[str, str, str, bool, str]
"""One session to open: (session, user, node, create[, agent asked for])."""


class SessionLog(Protocol):
    """Sessions, their logs and their owners' lists."""

    async def open_session(self, sid: str, user: str, node: str = "", *,
                           create: bool = True, agent: str = "") -> SessionInfo: ...

    async def open_sessions(self, opens: list[Opening]
                            ) -> list[SessionInfo | BaseException]: ...

    async def submit(self, sid: str, client_id: str, text: str, *, user: str,
                     source: str = "chat") -> Submitted: ...

    async def cancel(self, sid: str, turn: int | None) -> int: ...

    async def append(self, sid: str, event: Event | list[Event], *, done: int | None = None,
                     owner: str = "", run: str = "", later: bool = False) -> int: ...

    async def replay(self, sid: str, after: int, epoch: str | None,
                     limit: int = 500) -> Replay: ...

    async def partial(self, sid: str) -> Partial | None: ...

    async def session_meta(self, sid: str) -> dict[str, str]: ...

    async def session_owner(self, sid: str) -> str | None: ...

    async def touch_user_sessions(self, seen: dict[tuple[str, str], float]) -> None: ...

    async def user_sessions(self, user: str, limit: int) -> list[tuple[str, float]]: ...


class NodeDelivery(Protocol):
    """A node's membership: its heartbeat, its registrations, its delivery stream."""

    async def register(self, sid: str, node: str) -> None: ...

    async def unregister(self, sid: str, node: str) -> None: ...

    async def heartbeat_node(self, node: str) -> bool: ...

    async def read_delivery(self, node: str, last_id: bytes,
                            block_ms: int = 1000) -> list[Delivered]: ...

    async def drop_node(self, node: str) -> None: ...

    async def stream_frame(self, sid: str, frame: bytes, but: str = "") -> bool:
        """An off-log frame for the clients of ``sid``, to its nodes but ``but``."""

    async def live_nodes(self, since: float) -> list[str]: ...


class Claimed(Protocol):
    """A shard entry ("session S has a turn") claimed by one worker."""

    @property
    def id(self) -> bytes: ...

    @property
    def session(self) -> str: ...

    @property
    def reclaimed(self) -> bool:
        """Taken over from a worker that stopped renewing it."""

    @property
    def agent(self) -> str:
        """The agent whose shard holds the entry (the session's agent)."""

    @property
    def offset(self) -> int:
        """The turn the entry was written for (0: none said)."""

    async def ack(self) -> None:
        """Done with: the session's turns are finished (or another worker holds it)."""

    def ack_command(self) -> tuple[Any, ...]:
        """:meth:`ack` as a command for a pipeline (``end_turn``'s ``ack``)."""

    async def nack(self) -> None:
        """Give it back now (shutting down): a fresh entry for another worker, then ack."""

    async def keep(self) -> None:
        """Still working on it: reset its idle time so nobody reclaims it."""

    async def dead_letter(self, turn: Turn, attempts: int, error: str) -> None:
        """Record ``turn`` as failed for good in the shard's dead-letter stream."""


class TurnQueue(Protocol):
    """The inbound shards, read by the agent workers' consumer group."""

    shards: int
    cluster: bool

    async def ensure_groups(self, agents: tuple[str, ...] = ...) -> None: ...

    async def claim(self, shards: Sequence[Inbound | int], consumer: str, count: int,
                    block_ms: int) -> list[Claimed]: ...

    async def reclaim(self, shard: Inbound | int, consumer: str, min_idle_ms: int,
                      count: int) -> list[Claimed]: ...

    async def reclaim_all(self, shards: Sequence[Inbound | int], consumer: str,
                          min_idle_ms: int, count: int) -> list[Claimed]:
        """:meth:`reclaim` of every shard, ``count`` entries each at most, in one round trip."""

    async def ack_all(self, claims: Sequence[Claimed]) -> None:
        """Ack the claimed entries together (those of sessions the worker runs already)."""

    async def shard_lag(self, shard: int, agent: str = ...) -> int | None: ...

    async def inbound_lag(self, sid: str, agent: str = ...) -> int: ...

    async def shard_lags(self, shards: Collection[Inbound]) -> dict[Inbound, int]: ...

    async def worker_alive(self, worker: str) -> None: ...

    async def count_workers(self, since: float) -> int: ...

    async def maintain(self, agents: tuple[str, ...] = ...) -> None: ...


class TurnState(Protocol):
    """What a worker running a session reads and fences: lock, pending turns, attempts."""

    async def try_lock(self, sid: str, owner: str, lease_ms: int) -> bool: ...

    async def renew_lock(self, sid: str, owner: str, lease_ms: int) -> bool: ...

    async def release_lock(self, sid: str, owner: str, force: bool = False) -> int: ...

    async def next_turn(self, sid: str) -> Turn | None: ...

    async def begin_attempt(self, sid: str, turn: int, owner: str,
                            again: bool = False) -> tuple[int, bool]: ...

    async def rollback_memory(self, sid: str, turn: int) -> None: ...

    def memory(self, sid: str, turn: int, owner: str) -> RedisMemory: ...

    def cancel_feed(self) -> AbstractAsyncContextManager[AsyncIterator[str]]: ...

    def nodes_changed(self, sid: str) -> None:
        """A node joined ``sid`` (a notice on the cancel feed): re-read its nodes soon."""


class AgentDirectory(Protocol):
    """The registered agents: workers publish those they run, everyone else reads them."""

    async def publish_agents(self, infos: list[dict[str, Any]]) -> None: ...

    async def agents(self, fresh: bool = False) -> list[dict[str, Any]]: ...

    async def default_agent(self) -> str: ...


class Approvals(Protocol):
    """Turns waiting for a person to approve a tool call (sessions/approvals.py): the pause
    record a worker writes, the decisions edges record."""

    async def approve(self, sid: str, call_id: str, approved: bool, *, by: str,
                      message: str | None = None) -> int: ...

    async def decide(self, sid: str, turn: int, call_id: str, approved: bool, by: str,
                     message: str | None, now: float) -> int: ...

    async def pause(self, sid: str, turn: int, attempt: int, owner: str, state: str,
                    text: str, requests: list[Request], extras: list[Event]
                    ) -> list[Request]: ...

    async def resume_pause(self, sid: str, turn: int, owner: str) -> PauseRecord | None: ...

    async def decisions(self, sid: str, turn: int, call_ids: list[str]
                        ) -> dict[str, Decision] | None: ...

    async def mark_waiting(self, sid: str, turn: int, attempt: int) -> None: ...

    async def end_pause(self, sid: str) -> None: ...


class WorkerBus(TurnQueue, TurnState, AgentDirectory, Approvals, Protocol):
    """What an agent worker plays: the turn queue, the turn state, and appends to the log."""

    async def append(self, sid: str, event: Event | list[Event], *, done: int | None = None,
                     owner: str = "", run: str = "", later: bool = False) -> int: ...

    async def end_turn(self, sid: str, events: Event | list[Event], turn: int, owner: str,
                       release: bool = True, remember: list[bytes] | None = None,
                       ack: tuple[Any, ...] = (), tick: bool = False) -> Ended: ...

    def rides_tick(self, sid: str) -> bool: ...

    async def stream_chunk(self, sid: str, run: str, seq: int, event: bytes,
                           text: str) -> None: ...

    async def stream_chunks(self, pieces: list[tuple[str, str, int, bytes, str]]) -> None: ...

    async def start_attempt(self, sid: str, turn: int, owner: str, *, max_attempts: int,
                            again: bool = False, then: list[Event] | None = None,
                            said: str = "", lease_ms: int | None = None,
                            read_memory: bool = False, first: bool = False) -> Started: ...


class NodeBus(SessionLog, NodeDelivery, Protocol):
    """What a node holding sessions for clients plays (a voice call; an edge also counts
    its users, sessions/opening.py)."""
