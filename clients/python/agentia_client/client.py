"""The public :class:`AgentiaClient`: its settings, state, lifecycle, requests and events.

The background work is in the layers below it: :class:`_ConnectionLoop`
(agentia_client/connection.py), :class:`_Inbound` (agentia_client/inbound.py) and
:class:`_ClientCore` (agentia_client/core.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any

from agentia_client.connection import _ConnectionLoop
from agentia_client.errors import ClientClosed, SendTimeout
from agentia_client.events import TurnEvent
from agentia_client.pending import (
    _approve_request,
    _cancel_request,
    _Request,
    _send_request,
    _Waiter,
)
from agentia_client.policy import Backoff, _check_settings, _checked_urls
from agentia_client.streaming import _EventIterator, _TurnFeed
from agentia_client.values import (
    Ack,
    Event,
    Limits,
    Reset,
    TokenSource,
    Trace,
)


class AgentiaClient(_ConnectionLoop):
    """An ``agentia.v1`` session over one WebSocket at a time, reconnected as needed.

    Args:
        urls: one edge URL or several (``ws://host:port/v1/ws``; the path is added when
            missing). Tried in order; each reconnect moves on to the next.
        token: a JWT, or an async callable returning one, awaited before every connection
            attempt (return a fresh token there once the old one expires).
        session: the session id; ``None`` lets the edge create one (then
            :attr:`session` holds it and reconnects reuse it).
        heartbeat_s: seconds between ``ping`` frames when nothing else was sent; default
            the edge's ``welcome.limits.heartbeat_s``, or half its ``idle_timeout_s`` if
            that is shorter (an edge configured with a heartbeat longer than its idle
            timeout would otherwise close idle clients that follow its advice).
        after, epoch: start from this position instead of "now": ``after=0`` replays the
            whole log; a saved (:attr:`epoch`, :attr:`offset`) continues where a previous
            client stopped.
        backoff: reconnect delays and the optional cap on failed attempts.
        max_events: events buffered for :meth:`events` (see the module doc for the limit).
        stream_text: :meth:`events` also yields the ``chunk`` and ``partial`` frames (dicts
            without ``offset``), in the order to apply them (feed them to a
            :class:`TurnText` per turn), and a voice call's interim ``transcript`` frames
            (``final`` false, no ``offset``: :class:`Transcript` via ``parse_stream``); by
            default it yields log events only.
        max_pending: sends and cancels waiting for their answer; more calls wait for room.
        pace_requests: mirror the edge's token bucket so requests wait locally instead of
            being refused with ``rate_limited`` (each refusal is a strike on the edge).
        ack_timeout: seconds :meth:`send` and :meth:`cancel` wait for their answer, retries
            and reconnects included; ``None``: as long as the client runs.
        request_timeout: seconds a request may wait for its answer (a ``resume``: without
            any frame arriving) before the connection is dropped and re-opened; a send
            in flight is then re-sent with its id.
        open_timeout: seconds for the TCP + WebSocket handshake and for the ``welcome``.
        keepalive_s: WebSocket-level ping interval (and timeout) that detects dead TCP
            connections; ``None`` disables it.
        max_message_bytes: largest frame accepted from the edge.
        trace: called with ``("in"|"out", frame)`` for every frame (debugging, metrics).
        connect_kwargs: extra arguments for ``websockets.asyncio.client.connect`` (e.g.
            ``ssl``, ``proxy``).
        agent: the agent a new session talks to (``?agent=NAME``; default: the
            deployment's first). An unknown name stops the client with
            :class:`ServerClosed` 4504, a session made with another agent with 4505.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        token: TokenSource,
        session: str | None = None,
        *,
        heartbeat_s: float | None = None,
        after: int | None = None,
        epoch: str | None = None,
        backoff: Backoff | None = None,
        max_events: int = 1000,
        stream_text: bool = False,
        max_pending: int = 100,
        pace_requests: bool = True,
        ack_timeout: float | None = 30.0,
        request_timeout: float = 30.0,
        open_timeout: float = 10.0,
        close_timeout: float = 5.0,
        keepalive_s: float | None = 20.0,
        max_message_bytes: int | None = 16 * 1024 * 1024,
        trace: Trace | None = None,
        connect_kwargs: dict[str, Any] | None = None,
        agent: str | None = None,
    ) -> None:
        url_list = _checked_urls(urls)
        _check_settings(session, heartbeat_s, after, max_pending, request_timeout,
                        open_timeout, agent)
        super().__init__(
            url_list, token, session, heartbeat_s=heartbeat_s, after=after, epoch=epoch,
            backoff=backoff, max_events=max_events, stream_text=stream_text,
            max_pending=max_pending, pace_requests=pace_requests, ack_timeout=ack_timeout,
            request_timeout=request_timeout, open_timeout=open_timeout,
            close_timeout=close_timeout, keepalive_s=keepalive_s,
            max_message_bytes=max_message_bytes, trace=trace, connect_kwargs=connect_kwargs,
            agent=agent)

    # ------------------------------------------------------------ public state

    @property
    def session(self) -> str | None:
        return self._session

    @property
    def epoch(self) -> str | None:
        return self._tracker.epoch

    @property
    def offset(self) -> int:
        """The last offset applied: with :attr:`epoch`, where a later client can resume."""
        return self._tracker.last

    @property
    def agent(self) -> str | None:
        """The agent the session talks to: ``welcome.agent`` once connected (an edge that
        does not send it: the ``agent`` asked for, or None)."""
        return self._welcome_agent or self._agent

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def node(self) -> str | None:
        """The id of the edge node currently connected to."""
        return self._conn.node if self._conn else None

    @property
    def limits(self) -> Limits | None:
        return self._conn.limits if self._conn else None

    @property
    def running(self) -> bool:
        """True from :meth:`connect` until :meth:`close` or a terminal error."""
        return self._task is not None and not self._task.done()

    @property
    def error(self) -> BaseException | None:
        """The terminal error that stopped the client, if any."""
        return self._fatal

    def __repr__(self) -> str:
        state = "connected" if self.connected else ("running" if self.running else "stopped")
        return (f"<AgentiaClient session={self._session!r} {state} node={self.node!r} "
                f"epoch={self.epoch!r} offset={self.offset}>")

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AgentiaClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self) -> None:
        """Start the client and wait for its first connection (``welcome``).

        Raises the terminal error if it stops first (:class:`AuthenticationError`,
        :class:`ConnectError`, :class:`ReconnectFailed`, ...). Failed attempts before that are
        retried like reconnects; bound the wait with ``Backoff.max_attempts`` or a timeout.
        If the first connection fails, or the wait is cancelled, the client is closed.
        """
        if self._closed:
            raise ClientClosed("the client is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="agentia-client")
        try:
            while not self._connected.is_set():
                if self._fatal is not None:
                    raise self._fatal
                if self._task.done():
                    raise ClientClosed("the client stopped")
                self._progress.clear()
                await self._progress.wait()
        except BaseException:
            if self.stats["connections"] == 0:
                await self.close()  # nothing runs on behind the caller's back
            raise

    async def close(self) -> None:
        """Close the connection (1000) and stop; pending calls raise :class:`ClientClosed`
        and :meth:`events` ends after the events already queued."""
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})
        self._fail_all(ClientClosed("the client was closed"))

    # ------------------------------------------------------------ requests

    async def send(self, text: str, *, id: str | None = None) -> Ack:
        """Submit a user turn and wait for its ``ack``.

        Retried with the same id after retryable errors and reconnects, so it is stored
        once. Raises :class:`RequestError` for a refusal that retrying cannot fix,
        :class:`SendTimeout` after the client's ``ack_timeout``, or the client's terminal
        error. Wrap it in ``asyncio.timeout`` for a shorter wait.
        """
        req = _send_request(text, id, self._conn.limits if self._conn is not None else None)
        req.future = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._ack_timeout):
                ack: Ack = await self._submit(req)
                return ack
        except TimeoutError:
            if req.future is not None and req.future.done() and not req.future.cancelled():
                return req.future.result()  # type: ignore[no-any-return]
            raise SendTimeout(req.id, self._ack_timeout or 0.0) from None

    async def cancel(self, turn: int | None = None) -> int:
        """Cancel a pending or running turn (``None``: the oldest unfinished one).

        Returns the turn being cancelled; its outcome arrives as a ``cancelled`` event (or
        its ``reply`` if it finished first). Raises :class:`RequestError` with code
        ``turn_not_active`` when there is no such turn, and :class:`ConnectionLost` when the
        connection dropped with the cancel in flight (it is not re-sent: without a turn it
        could stop the next one).
        """
        req = _cancel_request(turn)
        req.future = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(self._ack_timeout):
            result: int = await self._submit(req)
            return result

    async def approve(self, call_id: str, approved: bool, message: str | None = None, *,
                      id: str | None = None) -> Ack:
        """Answer the :class:`ApprovalRequest` ``call_id``: approve or reject the tool call.

        Returns the edge's ``ack`` once it recorded the decision (its ``offset``: the
        :class:`ApprovalResult` event's, which then arrives like any event; the paused turn
        goes on).
        ``message`` (at most 1,000 characters) is shown to the agent and in the result.
        Raises :class:`RequestError` with code ``no_such_approval`` when no request with that
        ``call_id`` is pending in the session (unknown, already answered, or expired),
        ``bad_frame`` for a message that is too long, :class:`ConnectionLost` when the
        connection dropped with the frame in flight (it is not re-sent: the answer may have
        been recorded; call again, ``no_such_approval`` then means it was), and the errors
        of :meth:`send` (retryable refusals are retried like a send).
        """
        req = _approve_request(call_id, approved, message, id)
        req.future = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(self._ack_timeout):
            ack: Ack = await self._submit(req)
            return ack

    async def _submit(self, req: _Request) -> Any:
        self._check_running()
        assert req.future is not None
        if req.kind == "send" and any(r.id == req.id for r in self._requests):
            raise ValueError(f"a send with id {req.id!r} is already pending")
        async with self._slots:
            self._check_running()
            self._requests.append(req)
            self._wake.set()
            try:
                return await asyncio.shield(req.future)
            finally:
                if not req.future.done():
                    req.future.cancel()  # abandoned: the pump drops it
                with contextlib.suppress(ValueError):
                    self._requests.remove(req)

    async def ask(self, text: str, *, on_text: Callable[[str], None] | None = None) -> str:
        """Send ``text`` and return the final reply of that turn.

        ``on_text`` is called with the reply so far each time it changes: after each
        ``chunk`` or ``partial`` (after a reconnect, the text the edge had while the client
        was away), and with ``""`` when a new attempt of the turn restarts it. Raises
        :class:`TurnCancelled` (with the partial text), :class:`TurnFailed` (``turn_error``),
        :class:`SessionReset` or the errors of :meth:`send`. It waits as long as the turn
        runs (the edge ends every turn, at the latest with ``turn_timeout``); wrap it in
        ``asyncio.timeout`` to wait less.
        Cancelling ``ask`` stops the wait, not the turn: use :meth:`cancel` for that.
        """
        waiter = _Waiter(uuid.uuid4().hex, asyncio.get_running_loop().create_future(), on_text)
        try:
            await self._send_following(waiter, text)
            return await waiter.future
        finally:
            self._forget(waiter)

    async def stream(self, text: str, *, id: str | None = None) -> AsyncIterator[TurnEvent]:
        """Send ``text`` and yield that turn's events, typed, until the one that ends it.

        Yields :class:`UserMessage` (the turn's ``user`` event), :class:`TurnStart`, what the
        agent does (:class:`ToolCall`, :class:`ToolResult`, :class:`AgentState`,
        :class:`Handoff`, :class:`ApprovalRequest`: answer it with :meth:`approve` while
        iterating, then :class:`ApprovalResult`), the reply text as :class:`Chunk` (append
        its ``text``) and
        :class:`Partial` (replace the text with its ``text``: after a reconnect, what the
        edge had so far), and finally exactly one of :class:`Reply`, :class:`Cancelled` or
        :class:`TurnFailure`, then stops. Like :meth:`events`, each offset comes once and in
        order across reconnects; duplicate, out-of-order and stale chunks are dropped, so
        appending each ``Chunk`` and replacing on each ``Partial`` gives the reply so far.
        A :class:`TurnStart` means the reply starts (again: with ``attempt > 1``, or after an
        outage): drop the text collected so far.

        Raises the errors of :meth:`send`, and :class:`SessionReset` if the session is
        re-created while the turn runs. It does not take events from :meth:`events` (both
        see the turn). The turn's events wait in memory until taken (a turn is bounded by the
        edge's turn timeout). To stop early, close the generator (``contextlib.aclosing``);
        that stops the wait, not the turn: use :meth:`cancel` for that.
        """
        feed = _TurnFeed()
        ready = asyncio.Event()

        def push(ev: Event) -> None:
            feed.push(ev)
            ready.set()

        waiter = _Waiter(id if id is not None else uuid.uuid4().hex,
                         asyncio.get_running_loop().create_future(), None, on_event=push)
        waiter.future.add_done_callback(lambda _: ready.set())
        try:
            await self._send_following(waiter, text)
            while True:
                ev = feed.take()
                if ev is not None:
                    yield ev
                    if feed.ended:
                        return
                    continue
                if waiter.future.done():
                    waiter.future.result()  # raises SessionReset, ClientClosed, ...
                    return
                ready.clear()
                await ready.wait()
        finally:
            self._forget(waiter)

    async def _send_following(self, waiter: _Waiter, text: str) -> None:
        """Send ``text`` with the waiter's id; the waiter then follows the turn."""
        self._by_id[waiter.client_id] = waiter
        ack = await self.send(text, id=waiter.client_id)
        self._bind(waiter, ack.offset)

    def _forget(self, waiter: _Waiter) -> None:
        """An ask or stream is over: stop routing its turn's events to it."""
        self._by_id.pop(waiter.client_id, None)
        if waiter.turn is not None and self._by_turn.get(waiter.turn) is waiter:
            del self._by_turn[waiter.turn]
        if not waiter.future.done():
            waiter.future.cancel()

    def events(self) -> AsyncIterator[Event | Reset]:
        """The session's events, each offset once and in order, across reconnects.

        Buffering starts at :meth:`connect`, so nothing is missed before iterating. With
        ``stream_text=True`` it also yields the ``chunk`` and ``partial`` frames (no
        ``offset``) where they apply, and interim ``transcript`` frames as they come; they
        are never replayed (one skipped while the queue was full is lost: the turn's
        ``reply``, or the caller's final ``transcript``, still has the whole text). A
        :class:`Reset` means the view has a gap (see there). Meant for one consumer at a
        time: concurrent iterators share the events between them. Ends after :meth:`close`
        (once the queued events are taken); raises the client's terminal error.
        """
        return _EventIterator(self)

    async def next_event(self) -> Event | Reset:
        """The next item of :meth:`events`; raises ``StopAsyncIteration`` at its end."""
        while True:
            item = self._tracker.take()
            if item is not None:
                self._kick()
                return item
            if self._fatal is not None:
                raise self._fatal
            if self._closed or (self._task is not None and self._task.done()):
                raise StopAsyncIteration
            if self._task is None:
                raise ClientClosed("call connect() first")
            self._app_ready.clear()
            await self._app_ready.wait()
