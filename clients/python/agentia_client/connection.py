"""The connection and I/O loop: connect, serve one connection, back off, reconnect.

:class:`_ConnectionLoop` adds the client's background work to :class:`_Inbound` (what each
frame from the edge does, agentia_client/inbound.py) and :class:`_ClientCore`. One task
per client runs :meth:`_ConnectionLoop._run` (the supervisor); per connection, a task group
runs the reader, the request pump and the heartbeat. Which close codes and HTTP statuses end
the client is decided in agentia_client/policy.py; everything here is the WebSocket I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State
from websockets.typing import Subprotocol

from agentia_client.codes import PROTOCOL, __version__
from agentia_client.core import _Conn
from agentia_client.errors import (
    AuthenticationError,
    ClientError,
    ConnectError,
    ReconnectFailed,
    RequestError,
    ServerClosed,
)
from agentia_client.inbound import _Inbound
from agentia_client.pending import _fail, _Request
from agentia_client.policy import (
    _RETRY_STATUSES,
    FORBIDDEN_CLOSE,
    STABLE_AFTER_S,
    _retry_after,
    close_action,
    session_url,
)
from agentia_client.values import Limits

log = logging.getLogger("agentia_client")


class _Disconnected(Exception):
    """Ends a connection's task group (the socket closed, or the edge stopped answering)."""


class _Retry(Exception):
    """A connection attempt failed in a way worth retrying."""

    def __init__(self, cause: BaseException, retry_after: float = 0.0) -> None:
        super().__init__(repr(cause))
        self.cause = cause
        self.retry_after = retry_after


class _ConnectionLoop(_Inbound):
    """The supervisor task and, per connection, its reader, request pump and heartbeat."""

    # ------------------------------------------------------------ supervisor

    async def _run(self) -> None:
        """The client's one background task: supervise until a terminal error, record it."""
        try:
            await self._supervise()
        except Exception as exc:
            self._stop_on(exc)
        finally:
            self._progress.set()
            self._app_ready.set()

    async def _supervise(self) -> None:
        """Connect, serve and reconnect with backoff; ends only by raising."""
        failures = 0  # attempts in a row without a welcome
        unstable = 0  # connections in a row that ended quickly
        while True:
            url = self._urls[self._next_url % len(self._urls)]
            self._next_url += 1
            self.stats["connect_attempts"] += 1
            cause: BaseException | None = None  # why an attempt got no welcome
            try:
                lasted = await self._connection(url)
            except _Retry as retry:
                if retry.retry_after:
                    self._url_not_before[url] = time.monotonic() + retry.retry_after
                log.info("connecting to %s failed: %r", url, retry.cause)
                lasted, cause = 0.0, retry.cause
            if cause is None:
                failures = 0
                unstable = 0 if lasted >= STABLE_AFTER_S else unstable + 1
                n = unstable - 1
            else:
                failures += 1
                limit = self._backoff.attempts(self.stats["connections"] > 0)
                if limit is not None and failures >= limit:
                    raise ReconnectFailed(failures, cause)
                n = failures - 1 + unstable
            await self._pause(n)

    async def _connection(self, url: str) -> float:
        """One connection to ``url``, served to its end: the seconds it was open.

        Raises :class:`_Retry` when it got no ``welcome``, :class:`ServerClosed` when the
        edge closed it with a code that says not to reconnect.
        """
        ws = await self._open(url)
        code, reason, lasted = await self._serve(ws, url)
        self.last_close = (code, reason)
        self.stats[f"close_{code}"] += 1
        log.info("connection to %s closed: %s %s", url, code, reason)
        if close_action(code) == "stop":
            raise ServerClosed(code, reason)
        return lasted

    async def _pause(self, n: int) -> None:
        """Wait the backoff after ``n`` failures, or longer if the next URL asked for it."""
        nxt = self._urls[self._next_url % len(self._urls)]
        hold = self._url_not_before.get(nxt, 0.0) - time.monotonic()
        await asyncio.sleep(max(self._backoff.delay(max(n, 0)), hold))

    def _stop_on(self, exc: Exception) -> None:
        """The client stopped: keep the terminal error and fail whatever waits."""
        err: BaseException = exc
        while isinstance(err, BaseExceptionGroup) and len(err.exceptions) == 1:
            err = err.exceptions[0]
        if not isinstance(err, ClientError):
            log.error("the Agentia client stopped on an unexpected error", exc_info=err)
        self._fatal = err
        self._fail_all(err)

    async def _token_value(self) -> str:
        if isinstance(self._token, str):
            return self._token
        return await self._token()

    async def _open(self, url: str) -> ClientConnection:
        try:
            tok = await self._token_value()
        except Exception as exc:
            raise _Retry(exc) from exc
        kwargs: dict[str, Any] = {
            "additional_headers": {"Authorization": f"Bearer {tok}"},
            "subprotocols": [Subprotocol(PROTOCOL)],
            "compression": None,
            "open_timeout": self._open_timeout,
            "ping_interval": self._keepalive_s,
            "ping_timeout": self._keepalive_s,
            "close_timeout": self._close_timeout,
            "max_size": self._max_message_bytes,
            "user_agent_header": f"agentia-python/{__version__}",
            **self._connect_kwargs,
        }
        target = session_url(url, self._session, self._agent)
        try:
            return await connect(target, **kwargs)
        except InvalidStatus as exc:
            raise self._refusal(exc, url) from None
        except (OSError, TimeoutError, EOFError, InvalidHandshake) as exc:
            raise _Retry(exc) from exc

    def _refusal(self, exc: InvalidStatus, url: str) -> Exception:
        """What an HTTP refusal of the handshake means: stop, or retry (maybe later)."""
        status = exc.response.status_code
        reason = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body \
            else ""
        self.stats[f"http_{status}"] += 1
        if status in (401, 403):
            return AuthenticationError(status, reason, url)
        if status in _RETRY_STATUSES:
            return _Retry(exc, _retry_after(exc.response.headers.get("Retry-After")))
        return ConnectError(status, reason, url)

    async def _serve(self, ws: ClientConnection, url: str) -> tuple[int | None, str, float]:
        """Run one connection to its end: (close code, reason, seconds open); raises
        :class:`_Retry` when no ``welcome`` came."""
        started = time.monotonic()
        try:
            welcome = await self._welcome(ws)
        except (_Disconnected, TimeoutError, ConnectionClosed, orjson.JSONDecodeError) as exc:
            await self._shut(ws)
            if ws.close_code is not None and close_action(ws.close_code) == "stop":
                # refused after the upgrade: 4501 the session belongs to another user (as
                # an HTTP 403), 4502/4503 a per-user limit refused a new session
                self.stats[f"close_{ws.close_code}"] += 1
                if ws.close_code == FORBIDDEN_CLOSE:
                    raise AuthenticationError(403, ws.close_reason or "", url) from None
                raise ServerClosed(ws.close_code, ws.close_reason or "") from None
            raise _Retry(exc) from None
        conn = _Conn(ws, url, str(welcome.get("node", "")), Limits.from_welcome(
            welcome.get("limits")), time.monotonic(), time.monotonic())
        self._on_welcome(conn, welcome)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read(conn))
                tg.create_task(self._pump(conn))
                tg.create_task(self._heartbeat(conn))
        except* _Disconnected:
            pass
        finally:
            self._on_disconnect(conn)
            await self._shut(ws)
        return ws.close_code, ws.close_reason or "", time.monotonic() - started

    async def _shut(self, ws: ClientConnection) -> None:
        if ws.state is not State.CLOSED:
            with contextlib.suppress(Exception):
                await ws.close()

    async def _welcome(self, ws: ClientConnection) -> dict[str, Any]:
        async with asyncio.timeout(self._open_timeout):  # not wait_for: see _await_answer
            raw = await ws.recv()
        frame = orjson.loads(raw)
        if not isinstance(frame, dict) or frame.get("type") != "welcome":
            raise _Disconnected(f"expected welcome, got {raw!r:.200}")
        self._trace("in", frame)
        return frame

    # ------------------------------------------------------------ per-connection tasks

    async def _read(self, conn: _Conn) -> None:
        try:
            async for raw in conn.ws:
                conn.last_rx = time.monotonic()
                try:
                    frame = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    log.warning("ignoring a frame that is not JSON: %.200r", raw)
                    continue
                if isinstance(frame, dict):
                    self._trace("in", frame)
                    self._on_frame(conn, frame)
                self._kick()
        except ConnectionClosed:
            pass
        raise _Disconnected("the connection closed")

    async def _pump(self, conn: _Conn) -> None:
        """Write requests one at a time; each waits for its answer (or a reconnect)."""
        while True:
            req = self._pick()
            if req is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._run_request(conn, req)

    async def _run_request(self, conn: _Conn, req: _Request) -> None:
        """Write ``req`` and wait for its answer, again while the edge asks to retry."""
        loop = asyncio.get_running_loop()
        while True:
            await self._pacer.gate()
            if req.abandoned or not self._fits(conn, req):
                return
            if req.kind == "resume" and not req.transmissions:
                self._tracker.begin_resume()  # a retry keeps buffering (section 6, step 3)
                self.stats["resumes"] += 1
            if req.kind == "send" and req.transmissions and req.generation != self._generation:
                self.stats["resent"] += 1  # un-acked when the last connection dropped
            conn.answer = loop.create_future()
            conn.outstanding = req
            req.transmissions += 1
            req.generation = self._generation
            await self._write(conn, req.frame())
            frame = await self._await_answer(conn, req, conn.answer)
            conn.outstanding, conn.answer = None, None
            self._pacer.take()  # at the answer, not the write: see pacing.py
            if self._settle(req, frame):
                return

    def _fits(self, conn: _Conn, req: _Request) -> bool:
        """False (and the send failed) when a send breaks this edge's limits."""
        if req.kind == "send":
            try:
                req.check_size(conn.limits)
            except RequestError as exc:
                assert req.future is not None
                _fail(req.future, exc)
                return False
        return True

    async def _await_answer(self, conn: _Conn, req: _Request,
                            answer: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
        while True:
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result
                # when the answer lands in the same loop step as a cancel (close()), and the
                # swallowed cancel left the pump running and close() waiting for ever
                async with asyncio.timeout(self._request_timeout):
                    return await asyncio.shield(answer)
            except TimeoutError:
                # a resume's replay may be long: it only times out once frames stop coming
                replaying = (req.kind == "resume"
                             and time.monotonic() - conn.last_rx < self._request_timeout)
                if not replaying:
                    log.warning("no answer to %s from %s within %.0f s; reconnecting",
                                req.kind, conn.url, self._request_timeout)
                    raise _Disconnected("the edge stopped answering") from None

    async def _heartbeat(self, conn: _Conn) -> None:
        # the edge's advice, but never so slow that its idle timeout could fire first
        interval = self._heartbeat_s or min(conn.limits.heartbeat_s,
                                            conn.limits.idle_timeout_s / 2)
        while True:
            due = conn.last_tx + interval - time.monotonic()
            if due > 0:
                await asyncio.sleep(due)
                continue
            self.stats["pings"] += 1
            await self._write(conn, {"type": "ping"})

    async def _write(self, conn: _Conn, frame: dict[str, Any]) -> None:
        try:
            await conn.ws.send(orjson.dumps(frame).decode())
        except ConnectionClosed:
            raise _Disconnected("the connection closed") from None
        conn.last_tx = time.monotonic()
        self._trace("out", frame)
