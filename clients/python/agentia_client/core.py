"""The client's settings and state, and the bookkeeping that does no I/O.

:class:`_ClientCore` is the bottom layer of :class:`AgentiaClient`: above it,
:class:`_Inbound` (agentia_client/inbound.py) handles the edge's frames,
:class:`_ConnectionLoop` (agentia_client/connection.py) runs the connections, and
``AgentiaClient`` (agentia_client/client.py) is the public API. This layer routes applied
events to the :meth:`AgentiaClient.ask` calls that wait for them, picks the next request to
write, settles a request with its answer and fails everything that waits when the client stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection

from agentia_client.errors import ClientClosed, RequestError, SessionReset
from agentia_client.pacing import _Pacer
from agentia_client.pending import _fail, _Request, _resolve, _Waiter
from agentia_client.policy import Backoff
from agentia_client.tracker import Tracker
from agentia_client.values import Ack, Event, Limits, Reset, TokenSource, Trace, _int

log = logging.getLogger("agentia_client")


@dataclass(eq=False, slots=True)
class _Conn:
    """The current connection: its socket, its edge's limits and the request in flight."""

    ws: ClientConnection
    url: str
    node: str
    limits: Limits
    last_tx: float
    last_rx: float
    outstanding: _Request | None = None
    answer: asyncio.Future[dict[str, Any]] | None = None


class _ClientCore:
    """Settings, state, and the I/O-free handling of events, turns and requests."""

    def __init__(
        self,
        urls: list[str],
        token: TokenSource,
        session: str | None,
        *,
        heartbeat_s: float | None,
        after: int | None,
        epoch: str | None,
        backoff: Backoff | None,
        max_events: int,
        stream_text: bool,
        max_pending: int,
        pace_requests: bool,
        ack_timeout: float | None,
        request_timeout: float,
        open_timeout: float,
        close_timeout: float,
        keepalive_s: float | None,
        max_message_bytes: int | None,
        trace: Trace | None,
        connect_kwargs: dict[str, Any] | None,
        agent: str | None = None,
    ) -> None:
        self._urls = urls
        self._agent = agent
        self._welcome_agent: str | None = None
        self._token = token
        self._session = session
        self._heartbeat_s = heartbeat_s
        self._start_after = after
        self._start_epoch = epoch
        self._backoff = backoff or Backoff()
        self._ack_timeout = ack_timeout
        self._request_timeout = request_timeout
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._keepalive_s = keepalive_s
        self._max_message_bytes = max_message_bytes
        self._trace_fn = trace
        self._connect_kwargs = dict(connect_kwargs or {})
        self._init_state(max_events, max_pending, pace_requests, stream_text)

    def _init_state(self, max_events: int, max_pending: int, pace_requests: bool,
                    stream_text: bool) -> None:
        self.stats: Counter[str] = Counter()
        """Counters: connect_attempts, connections, reconnects, close_<code>, resumes,
        resets, retries, resent, error_<code>, pings, events, stream_frames."""
        self.last_close: tuple[int | None, str] | None = None
        self._tracker = Tracker(max_events, on_apply=self._on_apply, on_reset=self._on_reset,
                                on_stream=self._on_stream, stream_to_app=stream_text)
        self._requests: deque[_Request] = deque()
        self._slots = asyncio.Semaphore(max_pending)
        self._by_id: dict[str, _Waiter] = {}
        self._by_turn: dict[int, _Waiter] = {}
        self._conn: _Conn | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._fatal: BaseException | None = None
        self._wake = asyncio.Event()        # the request pump has work
        self._app_ready = asyncio.Event()   # events() has something to take
        self._progress = asyncio.Event()    # connected, or the client stopped
        self._connected = asyncio.Event()
        self._pacer = _Pacer(pace_requests)
        self._url_not_before: dict[str, float] = {}
        self._next_url = 0
        self._generation = 0

    # ------------------------------------------------------------ events and turns

    def _on_apply(self, ev: Event) -> None:
        kind = ev.get("type")
        if kind == "user":
            cid = ev.get("id")
            w = self._by_id.get(cid) if isinstance(cid, str) else None
            if w is not None:
                self._bind(w, ev["offset"])
                if w.turn == ev["offset"]:
                    w.feed(ev)
            return
        turn = ev.get("turn")
        w = self._by_turn.get(turn) if isinstance(turn, int) else None
        if w is not None and w.feed(ev):
            del self._by_turn[w.turn or 0]

    def _on_stream(self, frame: Event) -> None:
        """A ``chunk`` or ``partial`` frame, in the order to apply it (after a resume's
        log events): to the ask or stream following its turn."""
        turn = frame.get("turn")
        w = self._by_turn.get(turn) if isinstance(turn, int) else None
        if w is not None:
            w.feed_stream(frame)

    def _bind(self, w: _Waiter, turn: int) -> None:
        if w.turn is None and not w.future.done():
            w.turn, w.bound_epoch = turn, self._tracker.epoch
            w.reply.turn = turn
            self._by_turn[turn] = w

    def _on_reset(self, reset: Reset) -> None:
        if not reset.epoch_changed:
            for w in self._by_turn.values():
                w.restart()  # the rebuild replays what the log holds; the reply still comes
            return
        for turn, w in list(self._by_turn.items()):
            if w.bound_epoch != reset.epoch:
                del self._by_turn[turn]
                _fail(w.future, SessionReset(
                    f"session {self._session} was re-created (epoch {reset.epoch}); "
                    f"the outcome of turn {turn} is lost"))

    def _kick(self) -> None:
        if self._tracker.queue:
            self._app_ready.set()
        if self._tracker.need_resume and not self._tracker.buffering:
            self._wake.set()

    # ------------------------------------------------------------ requests

    def _pick(self) -> _Request | None:
        t = self._tracker
        if t.need_resume and not t.buffering:
            after, epoch = t.resume_args()
            return _Request("resume", after=after, epoch=epoch)
        while self._requests and self._requests[0].abandoned:
            self._requests.popleft()
        return self._requests[0] if self._requests else None

    def _settle(self, req: _Request, frame: dict[str, Any]) -> bool:
        """Handle a request's answer; False when it must be sent again."""
        if frame.get("type") == "error":
            return self._refused(req, RequestError.from_frame(frame))
        if req.future is None:
            return True
        if req.kind in ("send", "approve"):
            ack = Ack(req.id, _int(frame.get("offset")), frame.get("duplicate") is True)
            w = self._by_id.get(req.id) if req.kind == "send" else None
            if w is not None:
                self._bind(w, ack.offset)
            _resolve(req.future, ack)
        else:
            _resolve(req.future, _int(frame.get("turn")))
        return True

    def _refused(self, req: _Request, err: RequestError) -> bool:
        """An ``error`` answer: hold off and return False to retry, or fail the request."""
        self.stats[f"error_{err.code}"] += 1
        if err.code == "session_lost":
            # the edge closes with 4004 next; the request is sent again after the reconnect
            self.stats["retries"] += 1
            return False
        if err.retryable:
            ms = err.retry_after_ms if err.retry_after_ms is not None else 1000
            self._pacer.hold(ms, rate_limited=err.code == "rate_limited")
            self.stats["retries"] += 1
            log.info("%s %s refused (%s), retrying in %d ms", req.kind, req.id, err.code, ms)
            return False
        if req.future is None:
            raise err  # a resume we built ourselves was refused: a bug, stop
        _fail(req.future, err)
        return True

    # ------------------------------------------------------------ helpers

    def _check_running(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise ClientClosed("the client is closed")
        if self._task is None:
            raise ClientClosed("call connect() first")

    def _fail_all(self, exc: BaseException) -> None:
        for req in list(self._requests):
            if req.future is not None:
                _fail(req.future, exc)
        self._requests.clear()
        for w in list(self._by_id.values()) + list(self._by_turn.values()):
            _fail(w.future, exc)
        self._by_turn.clear()
        self._wake.set()
        self._app_ready.set()
        self._progress.set()

    def _trace(self, direction: Literal["in", "out"], frame: dict[str, Any]) -> None:
        if self._trace_fn is not None:
            try:
                self._trace_fn(direction, frame)
            except Exception:
                log.exception("the trace callback failed")
