"""Every Redis key, stream, group and TTL Agentia uses, in one place.

Hash tags (the part in braces) decide the Redis Cluster slot:

* all keys of one session share the tag ``{<session id>}`` so the Lua scripts that touch
  several of them run on one slot;
* each inbound shard has its own tag ``{in.<k>.<salt>}`` (:func:`shard_tag`), chosen so that
  the shards' slots spread evenly over the 16384 slots, hence over the masters; each agent of
  the registry (sessions/registry.py) has its own shards, ``{in.<agent>.<k>.<salt>}``, except
  the agent named ``default`` (the bare ``--agent pkg:attr`` of a single-agent deployment),
  whose shards keep the pre-registry names, so such a deployment upgrades without draining;
* each edge node's delivery stream has the tag ``{node.<id>}``.

No script or multi-key command touches keys of two different tags. The worker reads all
shards in one XREADGROUP on a single Redis only; on a Cluster it reads each shard on its own
(sessions/worker.py). See docs/redis-cluster.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from agentia.settings import NODE_TTL_RANGE

# re-exported: every key, tag and TTL is found from this module
from sessions.tags import CLUSTER_SLOTS as CLUSTER_SLOTS
from sessions.tags import DEFAULT_AGENT as DEFAULT_AGENT
from sessions.tags import dapr_tag as dapr_tag
from sessions.tags import key_slot as key_slot
from sessions.tags import session_tag as session_tag
from sessions.tags import shard_for as shard_for
from sessions.tags import shard_tag as shard_tag
from sessions.tags import spread_tag as spread_tag
from sessions.tags import webhook_tag as webhook_tag
from sessions.user_keys import CONN_LEASE_S as CONN_LEASE_S
from sessions.user_keys import NEW_SESSION_TTL as NEW_SESSION_TTL
from sessions.user_keys import NEW_SESSIONS_WINDOW_S as NEW_SESSIONS_WINDOW_S
from sessions.user_keys import UserKeys as UserKeys

GROUP = "agents"
"""Consumer group that agent workers join on every inbound shard."""

SESSION_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
"""Use with fullmatch (a "$" anchor would accept a trailing newline)."""
AGENT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
"""An agent's name (sessions/registry.py), part of its shards' key names; fullmatch."""

# TTLs and sizes (seconds / entries). Behaviour at each limit is documented in
# docs/architecture.md.
SESSION_TTL = 7 * 24 * 3600
"""Idle sessions (log, meta, memory) expire after a week without activity."""
LOG_MAXLEN = 10_000
"""Session log entries kept (approximate trim); older offsets resume with recovered=false."""
MAX_PENDING_TURNS = 100
"""Turns that may wait in one session; a further send gets a retryable ``overloaded`` error."""
DELIVERY_MAXLEN = 100_000
"""Entries kept in one edge node's delivery stream; a node further behind resumes from logs."""
DELIVERY_TTL = 120
"""A delivery stream nobody writes to for this long (its node is gone) expires."""
DELIVERY_GROUP = "reader"
"""The consumer group of a node's delivery stream on a single Redis: its position is where
the node's reads in flight continue (sessions/delivery_reads.py); NOACK, no pending list."""


def _node_ttl(default: int = 15) -> int:
    # validated at start with the other settings (agentia/settings.py ``node_ttl``: a process
    # refuses a bad value with one line); read here so that every module sees the one value
    try:
        ttl = int(os.environ.get("AGENTIA_NODE_TTL") or default)
    except ValueError:
        return default
    return ttl if NODE_TTL_RANGE[0] <= ttl <= NODE_TTL_RANGE[1] else default


NODE_TTL = _node_ttl()
"""An edge node whose heartbeat is older than this is considered dead (``AGENTIA_NODE_TTL``,
default 15 s; its heartbeat comes every ``min(5, NODE_TTL / 3)`` s)."""
NODE_CHECK_S = 5.0
"""How often a writer re-checks that an edge node it delivers to is alive."""
CHUNKS_PER_ENTRY = 256
"""Most reply pieces packed into one delivery-stream entry (a tick's pieces for one node)."""
PARTIAL_EVERY = 10
"""A run's partial buffer is written with every tenth piece (``seq`` 10, 20, ...: the text of
the ten since the last), not with each: a turn's ~150 pieces cost Redis ~15 ``RPUSHX``, not ~150
(issue 13). A reader that finds the buffer behind the chunks it gets waits for the next such
piece, whose text the buffer holds when it arrives (gateway/chunks.py): a connection that joins
mid-reply gets the text up to the last tenth piece at once, the rest within ten pieces (~0.4 s
at the default ``coalesce_ms``). Edges and workers must agree on it."""
NODES_FRESH_S = 10.0
"""How old a worker's view of which nodes hold a session may be when it streams a chunk. A node
that joins mid-turn is announced to the workers by OPEN (``"<session> nodes"`` on
:meth:`Keys.cancel_channel`) and gets the turn's chunks from the worker's next tick but one
(and a ``partial`` first); this bounds it when that notice was lost (a worker resubscribing).
1 s before issue 13's session 13, which re-read every streaming session's nodes once a second
(~6 ``HKEYS`` a 300-word turn)."""
CLIENT_IDS_KEPT = 1_000
"""Client message ids remembered per session for idempotent send."""
MEMORY_MAXLEN = 200
"""Conversation memory items kept per session (oldest dropped first)."""
USER_SESSIONS_KEPT = 1_000
"""Sessions listed per user (the least recently used drop off the list, not out of Redis)."""
NOTES_KEPT = 50
"""Operator/system messages waiting for a session's next turn (:meth:`Keys.notes`); beyond
this the oldest are dropped (they stay in the log)."""
PRESENCE_LISTED = 100
"""Devices listed by ``GET /v1/sessions/{id}/presence`` at most (``connected`` counts all)."""
PRESENCE_EVENT_MIN_S = 2.0
"""With ``AGENTIA_PRESENCE_EVENTS`` on, at most one ``presence`` event per session this often
from device and operator changes (a later change waits for the end of it; a voice call's start
and end are written at once): sessions/presence_events.py."""
WEBHOOK_GROUP = "webhooks"
"""Consumer group of the webhook dispatchers on every outbox shard."""
OUTBOX_MAXLEN = 1_000_000
"""Events waiting for their webhook per outbox shard (approximate trim): with no dispatcher
running for that long the oldest are dropped."""
WEBHOOK_DEAD_MAXLEN = 100_000
"""Dead-lettered webhook deliveries kept per outbox shard (approximate trim)."""
WEBHOOK_MARK_S = 60.0
"""An appender (with webhooks on) marks a session in its outbox shard's dirty set
(:meth:`Keys.webhook_dirty`) before appending, at most once per this many seconds per
session and process; the sweeper keeps a mark at least this long plus its delay, so a
session written to since its last mark is always in the set (sessions/webhook_outbox.py)."""
WEBHOOK_REPAIR_MAX = 1_000
"""Most events the sweeper re-queues for one session in one repair; a session further behind
(its cursor stale since webhooks were last off) skips the older ones, with a warning."""
WEBHOOK_SWEEP_BATCH = 200
"""Dirty sessions the sweeper checks per round trip and outbox shard."""
DAPR_GROUP = "dapr"
"""Consumer group of the Dapr publishers (``agentia dapr-publish``) on every Dapr outbox shard."""
DAPR_SHARDS = 4
"""Dapr outbox shard streams (a session's id picks its shard, as for webhooks); each is trimmed
at :data:`OUTBOX_MAXLEN` like a webhook outbox (no publisher, or the sidecar down, for that
many events: the oldest are dropped)."""
DLQ_MAXLEN = 100_000
"""Dead-lettered turns kept per shard (approximate trim)."""
DLQ_MARK_TTL = 24 * 3600
"""How long a dead-lettered turn's mark (:meth:`Keys.dead_lettered`) is kept: far past any
retry of its ending (a retry comes within the attempts' leases)."""
FORGET_AFTER = 24 * 3600
"""Heartbeat entries of nodes and workers older than this are removed from the lists."""
AGENT_TTL = 30
"""A registered agent's entry (:meth:`Keys.agents`) lives this long past the last renewal by
one of the workers running it (every ``AGENT_RENEW_S``): an agent no worker runs any more
(removed from the configuration, or all its workers gone) disappears within it."""
AGENT_RENEW_S = 5.0
"""How often a worker renews the entries of the agents it runs."""
AGENTS_FRESH_S = 3.0
"""How old an edge's or the control plane's copy of the registry may be."""
AGENTS_RECHECK_S = 0.25
"""A name not in the copy is looked up again if the copy is older than this (an agent whose
first worker just started); so a flood of unknown names costs at most 4 reads a second."""


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix (tests use a unique prefix each) and shard count."""

    prefix: str = "agentia"
    shards: int = 8

    # --- per session (one slot) ---
    def meta(self, sid: str) -> str:
        """Hash: owner, epoch, created, seq (last offset), done (last finished turn), ap (last
        append id), and per running turn a:<turn> (attempts), x:<turn> (cancel asked) and
        p:<turn> (the attempt in which it last waited for approval: attempts count from it);
        op (the operator holding the session, while a takeover is active: ``TAKEOVER``);
        wc (webhook cursor: every offset up to it is in the outbox; only with webhooks on,
        sessions/webhook_outbox.py); dc (the Dapr outbox's cursor, the same with Dapr
        publishing on); mv (the memory's version: raised by every script that changes the
        memory list, sessions/memory_cache.py)."""
        return f"{self.prefix}:{session_tag(sid)}:meta"

    def log(self, sid: str) -> str:
        """Stream of every event of the session, entry id ``0-<offset>``."""
        return f"{self.prefix}:{session_tag(sid)}:log"

    def turns(self, sid: str) -> str:
        """Stream of user turns not yet known finished, entry id ``0-<offset>``."""
        return f"{self.prefix}:{session_tag(sid)}:turns"

    def client_ids(self, sid: str) -> str:
        """Sorted set: client message id scored by its offset (idempotent send), bounded."""
        return f"{self.prefix}:{session_tag(sid)}:cids"

    def nodes(self, sid: str) -> str:
        """Hash: edge node id -> 1, for each edge node holding a connection of the session."""
        return f"{self.prefix}:{session_tag(sid)}:nodes"

    def partial(self, sid: str) -> str:
        """List: the running turn's reply text so far, while it runs: ``<run>`` first, then one
        ``<run>#<seq>|<text>`` per ``PARTIAL_EVERY`` chunks (the text of chunks up to ``seq``
        since the last; ``run`` = ``<turn>:<attempt>:<nonce>``); a resume reads it
        (docs/protocol.md ``partial``). Chunks of another run (a worker that lost the lock) are
        skipped by the reader. Deleted when the turn ends."""
        return f"{self.prefix}:{session_tag(sid)}:part"

    def pause(self, sid: str) -> str:
        """Hash: the turn waiting for human approval (sessions/approvals.py): ``turn``,
        ``epoch`` (the session's, at the pause), ``state`` (the Agents SDK RunState JSON),
        ``text`` (the reply so far), ``mn`` and ``m:<i>`` (the turn's memory items so far),
        and per tool call ``q:<call_id>`` (the request), ``x:<call_id>`` (when it expires,
        unix s), ``d:<call_id>`` (the decision, written once). Deleted when the turn ends;
        ``SESSION_TTL`` otherwise."""
        return f"{self.prefix}:{session_tag(sid)}:pause"

    def lock(self, sid: str) -> str:
        """String: the worker currently running the session's turns (with a lease)."""
        return f"{self.prefix}:{session_tag(sid)}:lock"

    def memory(self, sid: str) -> str:
        """List: Agents SDK conversation items as ``<turn>|<json>`` (turn tags allow rollback)."""
        return f"{self.prefix}:{session_tag(sid)}:mem"

    def notes(self, sid: str) -> str:
        """List: operator/system messages (``POST /v1/sessions/{id}/messages``, an operator's
        ``send``) and the text of user turns held by a takeover, as memory items (JSON),
        waiting for the next turn's attempt to move them into :meth:`memory` (``START``); at
        most NOTES_KEPT (MEMORY_MAXLEN after a held turn)."""
        return f"{self.prefix}:{session_tag(sid)}:notes"

    def presence(self, sid: str) -> str:
        """Hash: ``<node>:<connection>`` -> JSON ``{node, since, ua}`` (and ``op: true`` for an
        operator's connection) for each device connected to the session, written by its
        edge (batched, every 0.5 s) and removed when it disconnects; entries of dead nodes
        are dropped by the reader. Bounded by the owner's connection limits."""
        return f"{self.prefix}:{session_tag(sid)}:pres"

    def session_keys(self, sid: str) -> list[str]:
        """Every key of one session (one slot): what ``DELETE /v1/sessions/{id}`` removes."""
        return [self.meta(sid), self.log(sid), self.turns(sid), self.client_ids(sid),
                self.nodes(sid), self.partial(sid), self.lock(sid), self.memory(sid),
                self.notes(sid), self.presence(sid), self.pause(sid)]

    def user_sessions(self, user: str) -> str:
        """Sorted set: a user's sessions by last activity."""
        return f"{self.prefix}:{{u.{user}}}:sessions"

    # --- inbound shards (per agent) ---
    def inbound(self, shard: int, agent: str = DEFAULT_AGENT) -> str:
        """Stream: "session S of ``agent`` has a turn" entries, read by the workers running
        ``agent`` (consumer group :data:`GROUP`)."""
        return f"{self.prefix}:{{{shard_tag(shard, self.shards, agent or DEFAULT_AGENT)}}}:in"

    def dead_letters(self, shard: int, agent: str = DEFAULT_AGENT) -> str:
        """Stream: the turns given up on (capped at :data:`DLQ_MAXLEN`)."""
        return f"{self.prefix}:{{{shard_tag(shard, self.shards, agent or DEFAULT_AGENT)}}}:dlq"

    def dead_lettered(self, shard: int, agent: str, sid: str, turn: int) -> str:
        """String: set (``NX``) with the turn's dead-letter entry, in the same slot, so a
        retried ending writes no second entry (sessions/queue_redis.py); TTL
        :data:`DLQ_MARK_TTL`."""
        return f"{self.dead_letters(shard, agent)}:{sid}:{turn}"

    def agents(self) -> str:
        """Hash: agent name -> JSON of what the registry publishes of it (``GET /v1/agents``)
        with ``until`` (unix s) = its last renewal + ``AGENT_TTL``; readers skip entries
        past it, workers delete them. The key itself expires ``AGENT_TTL`` after the last
        renewal of any agent."""
        return f"{self.prefix}:agents"

    # --- edge nodes ---
    # --- webhooks (sessions/webhooks.py), one tag per outbox shard ---
    def outbox(self, k: int, shards: int) -> str:
        """Stream: events waiting for their webhook POST (consumer group
        :data:`WEBHOOK_GROUP`); fields s (session), o (offset), e (event), d (delivery id),
        t (first queued, ms), n (attempt, absent = 1)."""
        return f"{self.prefix}:{{{webhook_tag(k, shards)}}}:outbox"

    def webhook_retry(self, k: int, shards: int) -> str:
        """Sorted set: outbox entries (JSON of their fields) waiting for their next attempt,
        scored by when (ms)."""
        return f"{self.prefix}:{{{webhook_tag(k, shards)}}}:retry"

    def webhook_dead(self, k: int, shards: int) -> str:
        """Stream: webhook deliveries given up on (dead letters), with the last error."""
        return f"{self.prefix}:{{{webhook_tag(k, shards)}}}:dead"

    def webhook_dirty(self, k: int, shards: int) -> str:
        """Sorted set: sessions of this outbox shard written to with webhooks on, scored by
        their last mark (unix ms); the sweeper checks their cursor (meta ``wc``) against their
        log and drops the ones caught up for longer than ``WEBHOOK_MARK_S`` plus its delay.
        Bounded by the sessions active in that time."""
        return f"{self.prefix}:{{{webhook_tag(k, shards)}}}:dirty"

    def webhook_sweeper(self, k: int, shards: int) -> str:
        """String: the dispatcher sweeping this shard's dirty set (its consumer name), for
        four sweep delays (at least 10 s) past its last batch."""
        return f"{self.prefix}:{{{webhook_tag(k, shards)}}}:sweeper"
    # --- Dapr pub/sub (sessions/dapr_publish.py), one tag per outbox shard ---
    def dapr_outbox(self, k: int, shards: int = DAPR_SHARDS) -> str:
        """Stream: events waiting to be published to the Dapr topic (consumer group
        :data:`DAPR_GROUP`); fields s (session), o (offset), e (event)."""
        return f"{self.prefix}:{{{dapr_tag(k, shards)}}}:dapr"

    def dapr_dirty(self, k: int) -> str:
        """Sorted set: sessions of this Dapr outbox shard written to with publishing on, as
        :meth:`webhook_dirty` (their cursor: meta ``dc``)."""
        return f"{self.prefix}:{{{dapr_tag(k, DAPR_SHARDS)}}}:dirty"

    def dapr_sweeper(self, k: int) -> str:
        """String: the publisher sweeping this Dapr shard's dirty set (as
        :meth:`webhook_sweeper`)."""
        return f"{self.prefix}:{{{dapr_tag(k, DAPR_SHARDS)}}}:sweeper"

    def delivery(self, node: str) -> str:
        return f"{self.prefix}:{{node.{node}}}:out"

    def node_alive(self, node: str) -> str:
        return f"{self.prefix}:{{node.{node}}}:alive"

    def nodes_alive(self) -> str:
        """Sorted set: node id -> last heartbeat (unix seconds)."""
        return f"{self.prefix}:nodes"

    def workers_alive(self) -> str:
        """Sorted set: worker id -> last heartbeat (unix seconds)."""
        return f"{self.prefix}:workers"

    def cancel_channel(self) -> str:
        """Pub/Sub channel on which edges ask workers to stop a running turn
        (``"<session> <turn>"``) or tell them a paused turn has a decision
        (``"<session> <turn> approval"``) or a node joined a session whose lock is held
        (``"<session> nodes"``, OPEN)."""
        return f"{self.prefix}:cancel"


# --- voice call slots (issue 10 item 9; voice/slots.py) ------------------------------------
CALL_SLOT_LEASE = 60
"""A voice call's slot (:func:`user_calls`) is held this long past its last refresh: the job
refreshes it every third of it while the call runs and releases it at the end, so a call
whose job died without releasing stops counting within a minute."""


CALL_END_TTL = 24 * 3600
"""How long a call's end marker (:func:`call_end`) is kept: far past any webhook retry."""


def call_end(k: Keys, sid: str, room: str) -> str:
    """String: who recorded the ``call`` ``ended`` event of the call in ``room`` of session
    ``sid`` (the voice job, or the control plane for a lost worker), set once (``SET NX``) so
    the end is written exactly once; in the session's slot. TTL :data:`CALL_END_TTL`."""
    return f"{k.prefix}:{session_tag(sid)}:callend:{room}"


def user_calls(k: Keys, user: str) -> str:
    """Sorted set: a user's live voice calls (member: room name) scored by lease expiry (unix
    ms); same slot as :meth:`Keys.user_sessions`. Key TTL: the latest lease."""
    return f"{k.prefix}:{{u.{user}}}:calls"
