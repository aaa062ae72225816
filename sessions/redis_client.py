"""Redis clients for the bus: one server or a Cluster, chosen by the URL, and what counts as
an outage. See docs/redis-cluster.md."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any, TypeAlias
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import (
    AskError,
    ClusterError,
    MovedError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

from sessions.read_deadlines import ReadDeadlines

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError,
              # a Cluster mid-failover: slots without a master, a node that cannot be reached
              ClusterError, TryAgainError, RedisClusterException)
RedisClient: TypeAlias = "aioredis.Redis | RedisCluster"
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
"""``redis+cluster://[user:password@]host:port[,host:port...]``: a Redis Cluster, the listed
nodes being seeds for discovering the rest (``rediss+cluster`` for TLS)."""


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0] in CLUSTER_SCHEMES


PLAIN = frozenset({str, bytes, int})
"""Argument types hiredis packs as redis-py's encoder would (bool is not int here: refused)."""
PACK: Callable[[tuple[Any, ...]], bytes] | None = None
if HIREDIS_AVAILABLE:
    import hiredis
    PACK = hiredis.pack_command


class QuickWrite:
    """A connection whose command is written without a task of its own and packed in one
    hiredis call (:meth:`pack_command`), issue 13. redis-py
    sends every command (and pipeline) through ``asyncio.wait_for(socket_timeout)``, which on
    Python 3.11 wraps the write in a new Task with a timer: one task per round trip. Here,
    when the connection is open, no health check is due and the socket's buffer stays under
    its high-water mark (the write cannot wait), the bytes go to the transport at once; when
    the buffer is over it, the drain waits under ``socket_timeout`` as before; anything else
    (closed, a PING due, not connected) takes redis-py's path. A write error shows as before:
    the transport closes and the reply's read fails, retried as a dropped connection."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        conn: Any = self
        writer = conn._writer
        if (writer is None or writer.transport.is_closing() or not isinstance(command, list)
                or (check_health and conn.health_check_interval
                    and asyncio.get_running_loop().time() > conn.next_health_check)):
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        writer.writelines(command)
        transport = writer.transport
        if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
            try:
                await asyncio.wait_for(writer.drain(), conn.socket_timeout)
            except (TimeoutError, OSError) as exc:
                await conn.disconnect(nowait=True)
                raise RedisConnectionError(f"Error while writing to socket: {exc!r}") from exc

    async def read_response(self, disable_decoding: bool = False,
                            timeout: float | None = None,  # noqa: ASYNC109 (redis-py's own)
                            *, disconnect_on_error: bool = True,
                            push_request: bool | None = False) -> Any:
        """A reply read under the pool's shared read deadlines (:class:`ReadDeadlines`, one
        timer for every waiting read, looked at every 0.25 s) instead of redis-py's
        ``asyncio.timeout(socket_timeout)`` per reply: a Timeout object, a timer started and
        cancelled for every reply, ~6 a short turn at 1,000 turns/s (issue 13, session 19).
        A read that waits past ``socket_timeout`` fails as redis-py's does (the connection
        dropped, :class:`redis.exceptions.TimeoutError`), up to 0.25 s later. A read with a
        timeout of its own, or on a connection made outside :class:`QuickPool`, is
        redis-py's."""
        conn: Any = self
        deadlines: ReadDeadlines | None = conn.__dict__.get("deadlines")
        if timeout is not None or deadlines is None or not conn.socket_timeout:
            return await super().read_response(  # type: ignore[misc]
                disable_decoding, timeout, disconnect_on_error=disconnect_on_error,
                push_request=push_request)
        loop = asyncio.get_running_loop()
        conn.last, conn.limit = loop.time(), conn.socket_timeout
        deadlines.waiting.add(conn)
        deadlines.watch(loop)
        try:  # math.inf: redis-py reads with no timer of its own
            return await super().read_response(  # type: ignore[misc]
                disable_decoding, math.inf, disconnect_on_error=disconnect_on_error,
                push_request=push_request)
        finally:
            deadlines.waiting.discard(conn)

    def expire(self, now: float) -> None:
        """The read has waited ``socket_timeout`` (:class:`ReadDeadlines`): fail it as
        redis-py's timeout would. Only a read still waiting for bytes is failed (one whose
        bytes came meanwhile finishes): the exception wakes it, and redis-py drops the
        connection on it."""
        conn: Any = self
        reader = conn._reader
        waiter = getattr(reader, "_waiter", None)
        if waiter is not None and not waiter.done():
            reader.set_exception(RedisTimeoutError(f"Timeout reading from {conn._host_error()}"))

    def pack_command(self, *args: Any) -> list[bytes]:
        """A command of str, bytes and int arguments (every command this project sends)
        packed by hiredis in one call, where redis-py's packer first re-encodes each argument
        in Python (~50 ``isinstance`` a command); the bytes are the same (UTF-8, decimal ints:
        tests/integration/test_quick_pool.py compares them). A command name with a space
        (``SCRIPT LOAD``), a float, a bool (refused), a memoryview or another encoding: redis-py's
        packer."""
        conn: Any = self
        head = args[0]
        if (PACK is not None and type(head) is str and " " not in head
                and PLAIN.issuperset(map(type, args))
                and conn.encoder.encoding == "utf-8" and conn.encoder.encoding_errors == "strict"):
            return [PACK(args)]
        return super().pack_command(*args)  # type: ignore[misc,no-any-return]


class QuickConnection(QuickWrite, aioredis.Connection):
    pass


class QuickSSLConnection(QuickWrite, aioredis.SSLConnection):
    pass


class QuickUnixConnection(QuickWrite, aioredis.UnixDomainSocketConnection):
    pass


QUICK = {aioredis.Connection: QuickConnection, aioredis.SSLConnection: QuickSSLConnection,
         aioredis.UnixDomainSocketConnection: QuickUnixConnection}


class QuickPool(aioredis.BlockingConnectionPool):
    """redis-py's blocking pool with a checkout and a release that do not wait when they need
    not (issue 13: the pool's checkout and release were ~25 % of a worker's turn path). An idle
    connection that is connected, not marked for reconnecting and has nothing unread is taken
    and given back without the pool's condition, lock, timeout and metrics hooks (a list pop
    and append; nothing awaited but the hiredis buffer check, which does not suspend).
    Anything else (no idle connection, a stale one, a caller waiting for a full pool) takes
    redis-py's own path, which connects, checks, queues callers for up to ``timeout`` and,
    on release, wakes one. The bound on connections and ``disconnect`` are unchanged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.quick = 0
        """Checkouts that took the quick path (tests count them)."""
        self.slow = 0
        """Checkouts that took redis-py's path (a new connection, a stale one, a queue)."""
        self.deadlines = ReadDeadlines()
        """The read deadlines of this pool's connections (:meth:`QuickWrite.read_response`)."""

    def make_connection(self) -> Any:
        conn = super().make_connection()  # type: ignore[no-untyped-call]
        if isinstance(conn, QuickWrite):
            conn.__dict__["deadlines"] = self.deadlines
        return conn

    def _waiting(self) -> bool:
        """Callers waiting for a connection of a full pool (asyncio.Condition's own queue):
        while there are any, connections go and come back redis-py's way, which serves them
        first and wakes them."""
        return bool(getattr(self._condition, "_waiters", None))

    async def get_connection(self, command_name: Any = None, *keys: Any,
                             **options: Any) -> Any:
        idle = self._available_connections
        if idle and not self._waiting():
            conn: Any = idle.pop()
            self._in_use_connections.add(conn)
            try:
                fit = (conn.is_connected and not conn.should_reconnect()
                       and not await conn.can_read())  # hiredis: no suspension
            except (RedisConnectionError, RedisTimeoutError, OSError):
                fit = False  # closed by the server: redis-py's path reconnects it
            if fit:
                self.quick += 1
                return conn
            self._in_use_connections.discard(conn)
            idle.append(conn)
        self.slow += 1
        return await super().get_connection()  # type: ignore[no-untyped-call]

    async def release(self, connection: Any) -> None:
        if self._waiting() or connection.should_reconnect():
            await super().release(connection)
            return
        self._in_use_connections.discard(connection)
        self._available_connections.append(connection)


def connect(url: str, max_connections: int = 64) -> RedisClient:
    """A client with a bounded pool that queues callers for up to 5 s when every connection
    is busy (a handshake storm must wait, not fail), and that retries a command twice,
    quickly, on a dropped connection, then reports the outage. A ``redis+cluster://`` URL
    gives a Cluster client instead (:func:`connect_cluster`)."""
    if is_cluster_url(url):
        return connect_cluster(url, max_connections)
    pool = QuickPool.from_url(
        url, max_connections=max_connections, timeout=5, socket_connect_timeout=2,
        socket_timeout=10, health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=0.25, base=0.025), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError])
    pool.connection_class = QUICK.get(pool.connection_class, pool.connection_class)
    return aioredis.Redis(connection_pool=pool)


def connect_cluster(url: str, max_connections: int = 64) -> RedisCluster:
    """A Cluster client: ``max_connections`` per node (beyond it a command fails at once with
    a retryable error: redis-py's Cluster pool does not queue). A command that meets a dead
    node or a slot mid-failover fails at once and the next one re-reads the topology (MOVED
    and ASK are still followed): no retries here, because redis-py retries a failed
    *pipeline* by closing every connection of the client, including those other tasks are
    using mid-command. The callers retry instead: clients resend on ``unavailable``,
    workers retry the session, edges read again. Partial coverage is allowed, so the slots
    of healthy masters keep working while one master is replaced."""
    parts = urlsplit(url)
    auth, _, hosts = parts.netloc.rpartition("@")
    user, _, password = auth.partition(":")
    nodes = []
    for hp in hosts.split(","):
        host, _, port = hp.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{parts.scheme}:// wants host:port[,host:port...], not {hp!r}")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    return RedisCluster(
        startup_nodes=nodes, username=unquote(user) or None,
        password=unquote(password) or None, ssl=CLUSTER_SCHEMES[parts.scheme],
        max_connections=max_connections, require_full_coverage=False,
        socket_connect_timeout=2, socket_timeout=10, health_check_interval=10,
        retry=Retry(NoBackoff(), 0))


def stale_map(exc: ResponseError) -> bool:
    """A Cluster reply that says the client's map of slots is out of date."""
    return isinstance(exc, MovedError | AskError | TryAgainError) or (
        "WAIT cannot be used with replica" in str(exc))


def is_down(exc: BaseException) -> bool:
    """A Redis outage, including redis-py 8.1's Cluster race: after an error on a node it
    disconnects that node's idle connections while another task may be taking one of them,
    which then fails with AttributeError ('NoneType' ... 'writelines') inside redis-py."""
    if isinstance(exc, REDIS_DOWN):
        return True
    if not isinstance(exc, AttributeError) or exc.__traceback__ is None:
        return False
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return "/redis/asyncio/" in tb.tb_frame.f_code.co_filename.replace("\\", "/")
