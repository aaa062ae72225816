"""An HTTP/1.1 client transport for the OpenAI client (``httpx2``), made for many slow
streamed replies: the lean model's (``AGENTIA_MODEL_CLIENT=lean``) connection to its model.

What httpcore did per HTTP chunk (one h11 event, one anyio read with its timeout: a streamed
reply has one HTTP chunk per token) is done here once per socket read, in the connection's
``data_received`` (:class:`sessions.http_wire.ResponseReader`); the bytes wait in the
connection until the reader takes them, all at once. Read timeouts: one timer per pool, every
:data:`sessions.read_deadlines.TICK` while a reader waits (:class:`sessions.read_deadlines.
ReadDeadlines`; a timer started and cancelled per read was ~9 % of a streaming worker's main
thread at 1,000 streams, py-spy). The pool is a list of idle connections per origin: taking
and giving back one is O(1) (httpcore walked them all).

As a transport under ``httpx2.AsyncClient`` the OpenAI client still builds the request,
retries, and turns statuses into its errors; failures are httpx2's own exceptions, as
httpcore's were (``ConnectError``/``ConnectTimeout``, ``ReadTimeout``, ``WriteTimeout``,
``PoolTimeout``, ``RemoteProtocolError`` for a connection closed mid-reply, ``ReadError``).
Not covered, by design: HTTP/2, proxies (:func:`proxied`: the caller keeps httpx's own
transport for a proxied endpoint), request bodies streamed without a known length (they are
read whole first).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any

import httpx2

from sessions.http_wire import ResponseReader, WireError, request_head
from sessions.read_deadlines import ReadDeadlines

HIGH_WATER = 64 * 1024
"""Body bytes a connection holds for its reader before it stops reading the socket."""
WIRE_EXTENSION = "agentia_wire_body"
"""The response extension that carries the :class:`WireBody` (for readers that take its
bytes directly, :mod:`sessions.lean_model`)."""


class _Conn(asyncio.Protocol):
    """One connection: the protocol callbacks feed a :class:`ResponseReader`; one request
    at a time."""

    def __init__(self, key: tuple[str, str, int], deadlines: ReadDeadlines) -> None:
        self.key = key
        self.deadlines = deadlines
        self.limit = 0.0  # the read timeout of the reader waiting, if any
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.reader = ResponseReader()
        self.body: list[bytes] = []
        self.held = 0
        self.failure: Exception | None = None
        self.closed = False
        self.busy = False
        self.last = 0.0  # loop time of the last bytes (read timeouts count from it)
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._paused = False

    # -- protocol callbacks (the event loop calls these) --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.failure is not None:
            self._fail(httpx2.RemoteProtocolError("bytes from the server between replies"))
            return
        self.last = self.loop.time()
        try:
            got = self.reader.feed(data)
        except WireError as err:
            self._fail(httpx2.RemoteProtocolError(str(err)))
            return
        if got:
            self.body.append(got)
            self.held += len(got)
            if self.held > HIGH_WATER and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        try:
            self.reader.feed_eof()
        except WireError as err:
            if self.busy:
                self._fail(httpx2.RemoteProtocolError(str(err)))
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy and not self.reader.complete and self.failure is None:
            self.failure = httpx2.ReadError(str(exc)) if exc else httpx2.RemoteProtocolError(
                "the server closed the connection before the end of the response")
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._drained = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    # -- used by the transport --

    def _fail(self, err: Exception) -> None:
        if self.failure is None:
            self.failure = err
        self.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def start(self, head_only: bool) -> None:
        self.reader = ResponseReader(head_only)
        self.body, self.held, self.busy, self.last = [], 0, True, self.loop.time()

    async def send(self, data: bytes, limit: float | None) -> None:
        assert self.transport is not None
        if self.closed or self.transport.is_closing():
            raise httpx2.WriteError("the connection was closed")
        self.transport.write(data)
        if self._drained is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._drained), limit)
            except TimeoutError:
                raise httpx2.WriteTimeout("writing the request timed out") from None
        if self.closed:
            raise self.failure or httpx2.WriteError("the connection was closed")

    async def head(self, limit: float | None) -> None:
        while not self.reader.status:
            self._check()
            await self._wait(limit)

    async def read(self, limit: float | None) -> bytes:
        """The body bytes that came since the last read (waiting for some); b"" at the end."""
        self.unhold()  # all it holds is taken now: the socket is read again
        while not self.body:
            if self.reader.complete or self._check():
                return b""
            await self._wait(limit)
        data = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body, self.held = [], 0
        return data

    def hold(self) -> None:
        """Leave the socket unread until the next :meth:`read`: a reader that paces its reads
        gets what came meanwhile from the kernel in one socket read, not one per segment
        (one ``data_received`` and one chunked-encoding pass per read, not per token)."""
        if not self._paused and not self.closed and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def unhold(self) -> None:
        """Read the socket again (after :meth:`hold`), before the next :meth:`read`."""
        if self._paused and not self.closed and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def _check(self) -> bool:
        if self.failure is not None:
            raise self.failure
        if self.closed:
            raise httpx2.RemoteProtocolError(
                "the server closed the connection before the end of the response")
        return False

    async def _wait(self, limit: float | None) -> None:
        waiter = self._waiter = self.loop.create_future()
        if limit is not None:
            self.limit = limit
            self.deadlines.waiting.add(self)
            self.deadlines.watch(self.loop)
        try:
            await waiter
        finally:
            self._waiter = None
            self.deadlines.waiting.discard(self)

    def expire(self, now: float) -> None:
        """A waiting read with no bytes for its timeout fails (checked by :class:`ReadDeadlines`:
        bytes meanwhile move the deadline on)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done() and self.last + self.limit <= now:
            waiter.set_exception(httpx2.ReadTimeout("no bytes from the server in time"))

    def reusable(self) -> bool:
        return (self.reader.complete and self.reader.keep_alive and not self.body
                and not self.closed and self.failure is None)


class WirePool:
    """Connections per origin, at most ``max_connections`` open in all; an idle one is kept
    ``keepalive_expiry`` seconds. Taking and giving back one is O(1)."""

    def __init__(self, max_connections: int = 2_000, keepalive_expiry: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_connections, self.keepalive_expiry = max_connections, keepalive_expiry
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], deque[tuple[_Conn, float]]] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._deadlines = ReadDeadlines()
        self.open = 0

    async def acquire(self, key: tuple[str, str, int], timeouts: dict[str, Any]) -> _Conn:
        loop = asyncio.get_running_loop()
        deadline = None if timeouts.get("pool") is None else loop.time() + timeouts["pool"]
        while True:
            conn = self._idle_conn(key, loop.time())
            if conn is not None:
                return conn
            if self.open >= self.max_connections:
                self._drop_closed()
            if self.open < self.max_connections:
                return await self._connect(key, timeouts.get("connect"))
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, None if deadline is None
                                       else max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise httpx2.PoolTimeout("no model connection free in time") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def release(self, conn: _Conn) -> None:
        """``conn`` is done with its request: kept for the next if it can be, else closed."""
        conn.busy = False
        now = asyncio.get_running_loop().time()
        if conn.reusable():
            idle = self._idle.setdefault(conn.key, deque())
            idle.append((conn, now))
            while idle and (idle[0][1] + self.keepalive_expiry < now or idle[0][0].closed):
                self._discard(idle.popleft()[0])
        else:
            self._discard(conn)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    def _idle_conn(self, key: tuple[str, str, int], now: float) -> _Conn | None:
        idle = self._idle.get(key)
        while idle:
            conn, since = idle.pop()  # the most recently used: the least likely to be stale
            if conn.closed or since + self.keepalive_expiry < now:
                self._discard(conn)
                continue
            return conn
        return None

    def _drop_closed(self) -> None:
        for idle in self._idle.values():
            for item in [i for i in idle if i[0].closed]:
                idle.remove(item)
                self._discard(item[0])

    def _discard(self, conn: _Conn) -> None:
        conn.close()
        self.open -= 1

    async def _connect(self, key: tuple[str, str, int], limit: float | None) -> _Conn:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        self.open += 1
        try:
            if scheme == "https" and self._ssl is None:  # the OpenAI client's trust
                self._ssl = httpx2.create_ssl_context()
                self._ssl.set_alpn_protocols(["http/1.1"])
            tls = self._ssl if scheme == "https" else None
            _, conn = await asyncio.wait_for(loop.create_connection(
                lambda: _Conn(key, self._deadlines), host, port, ssl=tls,
                server_hostname=host if tls else None), limit)
        except TimeoutError:
            self.open -= 1
            raise httpx2.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except (OSError, ssl.SSLError) as err:
            self.open -= 1
            raise httpx2.ConnectError(f"connecting to {host}:{port}: {err}") from err
        except BaseException:
            self.open -= 1
            raise
        return conn

    def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                self._discard(idle.pop()[0])


class WireBody(httpx2.AsyncByteStream):
    """A response's body: each iteration gives every byte that came since the last."""

    def __init__(self, conn: _Conn, pool: WirePool, timeout: float | None) -> None:
        self._conn, self._pool, self._timeout = conn, pool, timeout
        self._released = False

    async def read(self) -> bytes:
        """What came since the last read (waiting for some); b"" at the end of the body."""
        return await self._conn.read(self._timeout)

    def hold(self) -> None:
        """Read nothing off the socket until the next :meth:`read` (``_Conn.hold``)."""
        self._conn.hold()

    def unhold(self) -> None:
        self._conn.unhold()

    async def __aiter__(self) -> Any:
        while data := await self._conn.read(self._timeout):
            yield data

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._conn)


class WireTransport(httpx2.AsyncBaseTransport):
    """The ``httpx2`` transport of :mod:`sessions.model_http` (module docstring)."""

    def __init__(self, max_connections: int = 2_000, keepalive_expiry: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.pool = WirePool(max_connections, keepalive_expiry, ssl_context)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx2.UnsupportedProtocol(f"{url.scheme!r} is not http or https")
        port = url.port or (443 if url.scheme == "https" else 80)
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        body = await request.aread()
        headers = list(request.headers.raw)
        if body and not any(n.lower() == b"content-length" for n, _ in headers):
            headers.append((b"Content-Length", b"%d" % len(body)))
        head = request_head(request.method, url.raw_path, headers)
        conn = await self.pool.acquire((url.scheme, url.host, port), timeouts)
        conn.start(request.method == "HEAD")
        try:
            await conn.send(head + body if len(body) < 65_536 else head, timeouts.get("write"))
            if len(body) >= 65_536:
                await conn.send(body, timeouts.get("write"))
            await conn.head(timeouts.get("read"))
        except BaseException:
            conn.close()
            self.pool.release(conn)
            raise
        stream = WireBody(conn, self.pool, timeouts.get("read"))
        reader = conn.reader
        return httpx2.Response(reader.status, headers=reader.headers, stream=stream,
                               extensions={"http_version": b"HTTP/1.1",
                                           "reason_phrase": reader.reason,
                                           WIRE_EXTENSION: stream})

    async def aclose(self) -> None:
        self.pool.close()


def proxied(url: str) -> bool:
    """Whether the environment routes ``url`` through a proxy (HTTP(S)_PROXY, ALL_PROXY,
    NO_PROXY): this transport does not speak to proxies, httpx's does."""
    import urllib.request

    proxies = urllib.request.getproxies()
    parsed = httpx2.URL(url)
    if not (proxies.get(parsed.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parsed.host)
