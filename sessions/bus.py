"""The Redis Streams bus: sessions, their logs, turns, delivery to nodes.

:class:`Bus` composes the Redis implementation of each role (sessions/roles.py): the session
log (log_redis.py, which delivers through delivery_redis.py), the turn queue (queue_redis.py)
and a running session's turn state (turns_redis.py). Each process kind uses the roles it
plays: edges the log and node delivery, workers the queue, the turn state and the log's
appends, the control plane the log and the queue's lag, voice calls the log and node
delivery. Every method that a client's request reaches maps Redis failures to
:class:`BusUnavailable` so callers can tell clients "retry" instead of crashing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentia.codes import BusUnavailable as BusUnavailable
from sessions.approvals import RedisApprovals
from sessions.attempts_redis import RedisAttempts
from sessions.events import frame_for as frame_for
from sessions.queue_redis import RedisTurnQueue
from sessions.redis_client import REDIS_DOWN as REDIS_DOWN
from sessions.redis_client import RedisClient as RedisClient
from sessions.redis_client import connect as connect
from sessions.redis_client import connect_cluster as connect_cluster
from sessions.redis_client import is_cluster_url as is_cluster_url
from sessions.redis_client import is_down as is_down
from sessions.roles import Forbidden as Forbidden
from sessions.roles import LockLost as LockLost
from sessions.roles import Missing as Missing
from sessions.roles import Replay as Replay
from sessions.roles import SessionInfo as SessionInfo
from sessions.roles import Submitted as Submitted
from sessions.roles import Turn as Turn
from sessions.turns_redis import RedisTurnState

if TYPE_CHECKING:
    from sessions.roles import NodeBus, WorkerBus


class Bus(RedisAttempts, RedisApprovals, RedisTurnQueue, RedisTurnState):
    """Every role on one Redis (or Redis Cluster) client; see :class:`RedisCore` for
    ``wait_replicas``."""


if TYPE_CHECKING:
    def _plays_every_role(bus: Bus) -> tuple[WorkerBus, NodeBus]:
        """mypy checks here that Bus satisfies each role's Protocol."""
        return bus, bus
