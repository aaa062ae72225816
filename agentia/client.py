"""The Python client SDK for the ``agentia.v1`` protocol (docs/protocol.md).

::

    async with AgentiaClient(["ws://edge-a:8765/v1/ws", "ws://edge-b:8765/v1/ws"],
                             token=get_token, session="support-42") as client:
        print(await client.ask("what is 6 * 7"))

        async for event in client.events():        # every event of the session, once, in order
            if isinstance(event, Reset):
                ...                                 # the view has a gap: rebuild it
            elif event["type"] == "delta":
                print(event["text"], end="")

What the client does for you:

* **Connects and reconnects.** URLs are tried in the order given; after every disconnect the
  next one is used. Reconnects wait a jittered exponential backoff (:class:`Backoff`), honour
  ``Retry-After`` on HTTP 503 for that URL, and stop for good on HTTP 401/403 (and the other
  4xx refusals but 408, 425, 429), on close codes 4500-4999 and the protocol-violation codes
  1002, 1003, 1007, 1008 and 1010, or after ``Backoff.max_attempts`` failed attempts in a row.
  Every other close (1000 not asked for by us, 1001, 1006, 1009, 1011, 1012, 4000-4499, ...)
  reconnects. A token callable is awaited again before every attempt, so a fresh token is
  used after ``4003 token_expired``.
* **Resumes.** It keeps the session id, epoch and the last offset applied; after a reconnect
  it sends ``resume`` and applies what was missed, exactly once and in offset order. A resume
  that cannot be recovered (log trimmed, session re-created), or an unrequested ``resumed``
  with ``recovered: false``, is surfaced as a :class:`Reset` in :meth:`events`.
* **Sends exactly once.** :meth:`send` gives each message an id, waits for its ``ack``,
  retries with the same id after ``rate_limited`` (after ``retry_after_ms``), ``overloaded``,
  ``unavailable`` and ``internal``, and re-sends it with the same id after a reconnect: the
  edge deduplicates, so a turn never runs twice. By default the client also mirrors the
  edge's token bucket (``welcome.limits``), so requests are paced instead of refused.
* **Keeps the connection alive** with a ``ping`` every ``heartbeat_s`` seconds without other
  traffic (the edge's ``limits.heartbeat_s`` unless given), and drops a connection whose edge
  stops answering requests (``request_timeout``) or WebSocket pings (``keepalive_s``).

Requests (``send``, ``cancel`` and the client's own ``resume``) go out one at a time, in
order: each waits for its answer before the next is written. The edge handles a connection's
frames one by one anyway, so this costs one round trip per request, and it keeps a session's
messages in the order they were sent, with or without retries.

Bounded queues, and what happens at the limit:

* ``max_events`` events not yet taken from :meth:`events`: when full, new events are not
  queued, and the client remembers the first one it skipped. It keeps reading the socket
  (acks, replies to :meth:`ask`, heartbeats are never held up) and once the application has
  taken half of the queue it asks the edge again for the skipped events (``resume``): nothing
  is lost while the session log still holds them (about the last 10,000 events; otherwise a
  :class:`Reset` says so). An application that never calls :meth:`events` just leaves the
  queue full.
* ``max_pending`` sends and cancels not yet answered: further calls wait for room (the wait
  counts towards their timeout).
* Events received while a ``resume`` is answered are buffered (at most
  ``max(max_events, 1024)``); any beyond are dropped and fetched again by another resume.
* The ``websockets`` library queues at most 16 incoming messages, then stops reading the
  socket.

All background work runs in one task per client (started by :meth:`connect`, ended by
:meth:`close`) and, per connection, a task group of reader, request pump and heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from agentia import PROTOCOL, __version__

__all__ = [
    "Ack",
    "AgentiaClient",
    "AuthenticationError",
    "Backoff",
    "ClientClosed",
    "ClientError",
    "ConnectError",
    "ConnectionLost",
    "Event",
    "Limits",
    "ReconnectFailed",
    "RequestError",
    "Reset",
    "SendTimeout",
    "ServerClosed",
    "SessionReset",
    "Tracker",
    "TurnCancelled",
    "TurnError",
    "TurnFailed",
    "close_action",
]

log = logging.getLogger("agentia.client")

Event: TypeAlias = dict[str, Any]
"""A session log event as sent by the edge: ``{"offset": 21, "type": "delta", ...}``."""
TokenSource: TypeAlias = str | Callable[[], Awaitable[str]]
Trace: TypeAlias = Callable[[Literal["in", "out"], dict[str, Any]], None]

SESSION_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_CLIENT_ID = 64
WS_PATH = "/v1/ws"
CONTROL_FRAMES = frozenset({"welcome", "ack", "resumed", "cancelling", "pong", "error"})
STABLE_AFTER_S = 10.0
"""A connection that lasted this long resets the reconnect backoff."""
_TERMINAL_CLOSES = frozenset({1002, 1003, 1007, 1008, 1010})
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


# ---------------------------------------------------------------- errors


class ClientError(Exception):
    """Root of the SDK's exceptions."""


class ConnectError(ClientError):
    """The edge refused the WebSocket handshake with an HTTP status that retrying will not
    fix (e.g. 400 bad session id, 404 wrong path)."""

    def __init__(self, status: int, reason: str, url: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {reason}")
        self.status = status
        self.reason = reason
        self.url = url


class AuthenticationError(ConnectError):
    """HTTP 401 (token missing, invalid or expired) or 403 (the session belongs to another
    user). The client stops: fix the token or the session, then connect again."""


class ReconnectFailed(ClientError):
    """``Backoff.max_attempts`` connection attempts in a row failed."""

    def __init__(self, attempts: int, last: BaseException | None) -> None:
        super().__init__(f"gave up after {attempts} failed connection attempts: {last!r}")
        self.attempts = attempts
        self.last = last


class ServerClosed(ClientError):
    """The edge closed the connection with a code that says not to reconnect."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection closed by the edge with {code}: {reason or '(no reason)'}")
        self.code = code
        self.reason = reason


class ClientClosed(ClientError):
    """The client was closed (by :meth:`AgentiaClient.close`) or never connected."""


class ConnectionLost(ClientError):
    """The connection dropped while a ``cancel`` was in flight: it may or may not have been
    recorded (cancels are not re-sent automatically, see :meth:`AgentiaClient.cancel`)."""


class RequestError(ClientError):
    """The edge refused a request with an ``error`` frame (or the client refused it locally
    because it breaks the edge's limits)."""

    def __init__(self, code: str, message: str, *, retryable: bool = False,
                 ref: str | None = None, retry_after_ms: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.ref = ref
        self.retry_after_ms = retry_after_ms

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> RequestError:
        ms = frame.get("retry_after_ms")
        ref = frame.get("ref")
        return cls(str(frame.get("code", "unknown")), str(frame.get("message", "")),
                   retryable=frame.get("retryable") is True,
                   ref=ref if isinstance(ref, str) else None,
                   retry_after_ms=ms if isinstance(ms, int) and not isinstance(ms, bool)
                   else None)


class SendTimeout(ClientError, TimeoutError):
    """No ``ack`` within the timeout. The message may or may not have been stored: send it
    again with the same ``id`` to find out (the edge acks a duplicate with its offset)."""

    def __init__(self, client_id: str, timeout: float) -> None:
        super().__init__(f"no ack for message {client_id!r} within {timeout:g} s")
        self.id = client_id


class SessionReset(ClientError):
    """The session was re-created (new epoch) while :meth:`AgentiaClient.ask` waited for a
    turn of the old one; that turn's outcome is lost."""


class TurnError(ClientError):
    """The turn asked for with :meth:`AgentiaClient.ask` did not end with a reply."""

    def __init__(self, turn: int, message: str) -> None:
        super().__init__(message)
        self.turn = turn


class TurnFailed(TurnError):
    """The turn ended with ``turn_error`` (``turn_failed`` or ``turn_timeout``)."""

    def __init__(self, turn: int, code: str, message: str) -> None:
        super().__init__(turn, f"turn {turn} failed: {code}: {message}")
        self.code = code


class TurnCancelled(TurnError):
    """The turn was cancelled; ``text`` is what its last attempt had produced."""

    def __init__(self, turn: int, text: str) -> None:
        super().__init__(turn, f"turn {turn} was cancelled")
        self.text = text


# ---------------------------------------------------------------- small values


@dataclass(frozen=True, slots=True)
class Ack:
    """The edge stored the message: ``offset`` is its turn id (``turn`` in events)."""

    id: str
    offset: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Reset:
    """The view of the session has a gap: discard it and rebuild it from what follows.

    Yielded by :meth:`AgentiaClient.events` when a resume could not be recovered (the log was
    trimmed, or the session was re-created with a new epoch and its offsets restarted from 1)
    or when the edge reported that Redis lost the session. The events after it are what the
    log still holds (from its oldest entry), then live ones; offsets after a Reset with a new
    ``epoch`` start again and are only comparable within that epoch.
    """

    epoch: str
    offset: int
    """The edge's offset when it reported the reset."""
    previous_epoch: str | None
    requested: bool
    """False when the edge sent it unrequested (Redis lost the session)."""

    @property
    def epoch_changed(self) -> bool:
        return self.epoch != self.previous_epoch


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits an edge enforces, from ``welcome.limits``."""

    max_frame_bytes: int = 64 * 1024
    max_text_chars: int = 16_000
    rate_per_s: float = 5.0
    burst: float = 20.0
    send_queue: int = 256
    heartbeat_s: float = 25.0
    idle_timeout_s: float = 90.0

    @classmethod
    def from_welcome(cls, raw: Any) -> Limits:
        d = raw if isinstance(raw, dict) else {}
        base = cls()

        def num(name: str, default: float) -> float:
            v = d.get(name)
            if isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
                return float(v)
            return default

        return cls(max_frame_bytes=int(num("max_frame_bytes", base.max_frame_bytes)),
                   max_text_chars=int(num("max_text_chars", base.max_text_chars)),
                   rate_per_s=num("rate_per_s", base.rate_per_s),
                   burst=num("burst", base.burst),
                   send_queue=int(num("send_queue", base.send_queue)),
                   heartbeat_s=num("heartbeat_s", base.heartbeat_s),
                   idle_timeout_s=num("idle_timeout_s", base.idle_timeout_s))


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: ``min(cap, base * 2**n)`` with the top ``jitter`` fraction
    randomised, for the n-th consecutive failure (n = 0, 1, ...)."""

    base: float = 0.5
    cap: float = 30.0
    max_attempts: int | None = None
    """Failed connection attempts in a row (no ``welcome``) before giving up with
    :class:`ReconnectFailed`; ``None``: never give up."""
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not (self.base > 0 and self.cap >= self.base and 0 <= self.jitter <= 1):
            raise ValueError("Backoff needs base > 0, cap >= base and 0 <= jitter <= 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("Backoff.max_attempts must be at least 1 (or None)")

    def delay(self, n: int, rand: Callable[[], float] = random.random) -> float:
        top = min(self.cap, self.base * 2.0 ** min(max(n, 0), 60))
        return top * (1.0 - self.jitter * rand())


def close_action(code: int | None) -> Literal["reconnect", "stop"]:
    """What a close code asks the client to do (docs/protocol.md, section 8).

    ``None`` (no close frame, e.g. the edge died: 1006) reconnects; so do the standard codes
    except the protocol violations (1002, 1003, 1007, 1008, 1010), and 4000-4499. 4500-4999
    are terminal. A 1000 the client did not ask for also reconnects, as the protocol says.
    """
    if code is None:
        return "reconnect"
    if 4500 <= code <= 4999 or code in _TERMINAL_CLOSES:
        return "stop"
    return "reconnect"


def session_url(url: str, session: str | None) -> str:
    """``url`` with the ``/v1/ws`` path when it has none, and ``?session=`` set."""
    parts = urlsplit(url)
    path = parts.path if parts.path not in ("", "/") else WS_PATH
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k != "session"]
    if session:
        query.append(("session", session))
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), ""))


@dataclass(slots=True)
class _Bucket:
    """A mirror of the edge's per-connection token bucket (gateway/protocol.py)."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def _refill(self, now: float) -> None:
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self, now: float) -> float:
        """Seconds until a token is available (0: now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0

    def empty(self, now: float) -> None:
        self._refill(now)
        self.tokens = min(self.tokens, 0.0)


# ---------------------------------------------------------------- the event tracker


def _noop_event(_: Event) -> None:
    return None


def _noop_reset(_: Reset) -> None:
    return None


class Tracker:
    """Exactly-once, in-order delivery of a session's events across reconnects (no I/O).

    It implements section 6 of docs/protocol.md with two cursors: ``last``, the highest
    offset applied (every lower one applied too; ``on_apply`` is called once per offset, in
    order), and the application's queue, which may fall behind ``last`` when it is full
    (``app_next`` is then the first offset it lacks). ``need_resume`` says that the owner
    should send ``resume`` with :meth:`resume_args`: after a gap, after a resume that ended
    short, or when a queue that overflowed has room again.
    """

    def __init__(self, max_events: int = 1000, *, on_apply: Callable[[Event], None] = _noop_event,
                 on_reset: Callable[[Reset], None] = _noop_reset) -> None:
        if max_events < 2:
            raise ValueError("max_events must be at least 2")
        self.max_events = max_events
        self.buffer_limit = max(max_events, 1024)
        self.on_apply = on_apply
        self.on_reset = on_reset
        self.epoch: str | None = None
        self.last = 0
        self.started = False
        self.queue: deque[Event | Reset] = deque()
        self.app_next: int | None = None
        self.buffering = False
        self.need_resume = False
        self._buf: dict[int, Event] = {}

    # -------------------------------------------------------- positions

    def start_live(self, epoch: str, offset: int) -> None:
        """First connection, no history wanted: start after the welcome's offset."""
        self.epoch, self.last, self.started = epoch, offset, True

    def start_at(self, after: int, epoch: str | None) -> None:
        """Start from a known position (``after=0``: the whole log); a resume follows."""
        self.epoch, self.last, self.started = epoch, after, True
        self.need_resume = True

    def resume_args(self) -> tuple[int, str | None]:
        """``after`` and ``epoch`` for the next ``resume`` frame."""
        after = self.last if self.app_next is None else self.app_next - 1
        return after, self.epoch

    def in_sync_with(self, epoch: str, offset: int) -> bool:
        """True when a new connection's welcome shows nothing was missed."""
        return (self.started and self.epoch == epoch and self.last == offset
                and self.app_next is None)

    # -------------------------------------------------------- resumes

    def begin_resume(self) -> None:
        """A ``resume`` is being sent: buffer events until its ``resumed``."""
        self.buffering = True
        self.need_resume = False
        self._buf.clear()

    def end_connection(self) -> None:
        """The connection is gone; the next one resumes from :meth:`resume_args`."""
        self.buffering = False
        self._buf.clear()
        self.need_resume = False

    def on_resumed(self, recovered: bool, offset: int, epoch: str) -> Reset | None:
        """The answer to our ``resume``: apply the buffered events (section 6, step 3)."""
        events = [self._buf[o] for o in sorted(self._buf)]
        self._buf.clear()
        self.buffering = False
        reset: Reset | None = None
        if recovered:
            self.epoch = epoch
        else:
            reset = Reset(epoch, offset, self.epoch, requested=True)
            self._reset(reset)
            self.last = events[0]["offset"] - 1 if events else offset
        for ev in events:
            self._process(ev)
        if self.last < offset:
            self.need_resume = True  # events were dropped (buffer full) or out of order
        self._check_app()
        return reset

    def on_unrequested_reset(self, offset: int, epoch: str) -> Reset:
        """An unrequested ``resumed`` with ``recovered: false`` (section 6, step 5)."""
        reset = Reset(epoch, offset, self.epoch, requested=False)
        self._reset(reset)
        self.last = offset
        return reset

    def _reset(self, reset: Reset) -> None:
        self.epoch = reset.epoch
        self.app_next = None
        if self.queue and isinstance(self.queue[-1], Reset):
            self.queue[-1] = reset  # the earlier one's rebuild had not started: one is enough
        else:
            self.queue.append(reset)  # allowed past max_events: a Reset is never dropped
        self.on_reset(reset)

    # -------------------------------------------------------- events

    def on_event(self, ev: Event) -> None:
        o = ev.get("offset")
        if not isinstance(o, int) or isinstance(o, bool) or o < 1:
            return
        if self.buffering:
            if o not in self._buf and len(self._buf) < self.buffer_limit:
                self._buf[o] = ev
            return
        self._process(ev)

    def _process(self, ev: Event) -> None:
        o: int = ev["offset"]
        if o == self.last + 1:
            self.last = o
            self.on_apply(ev)
            self._offer(ev, applied=True)
        elif o <= self.last:
            self._offer(ev, applied=False)
        else:
            self.need_resume = True  # a gap: the resume's replay brings it (and this one)

    def _offer(self, ev: Event, *, applied: bool) -> None:
        """Queue an event for the application, unless it is behind or full."""
        o: int = ev["offset"]
        if self.app_next is None:
            if not applied:
                return  # a duplicate it already has
            if len(self.queue) < self.max_events:
                self.queue.append(ev)
            else:
                self.app_next = o
        elif o == self.app_next and len(self.queue) < self.max_events:
            self.queue.append(ev)
            self.app_next = o + 1 if o < self.last else None

    def take(self) -> Event | Reset | None:
        item = self.queue.popleft() if self.queue else None
        self._check_app()
        return item

    def _check_app(self) -> None:
        if (self.app_next is not None and not self.buffering
                and len(self.queue) <= self.max_events // 2):
            self.need_resume = True


# ---------------------------------------------------------------- client internals


class _Disconnected(Exception):
    """Ends a connection's task group (the socket closed, or the edge stopped answering)."""


class _Retry(Exception):
    """A connection attempt failed in a way worth retrying."""

    def __init__(self, cause: BaseException, retry_after: float = 0.0) -> None:
        super().__init__(repr(cause))
        self.cause = cause
        self.retry_after = retry_after


@dataclass(eq=False, slots=True)
class _Request:
    kind: Literal["send", "cancel", "resume"]
    future: asyncio.Future[Any] | None = None
    id: str = ""
    text: str = ""
    turn: int | None = None
    after: int = 0
    epoch: str | None = None
    transmissions: int = 0
    generation: int = 0

    def frame(self) -> dict[str, Any]:
        if self.kind == "send":
            return {"type": "send", "id": self.id, "text": self.text}
        if self.kind == "cancel":
            return {"type": "cancel", "turn": self.turn}
        return {"type": "resume", "after": self.after, "epoch": self.epoch}

    @property
    def abandoned(self) -> bool:
        return self.future is not None and self.future.done()


@dataclass(eq=False, slots=True)
class _Conn:
    ws: ClientConnection
    url: str
    node: str
    limits: Limits
    last_tx: float
    last_rx: float
    outstanding: _Request | None = None
    answer: asyncio.Future[dict[str, Any]] | None = None


@dataclass(eq=False, slots=True)
class _Waiter:
    """One :meth:`AgentiaClient.ask`: follows its turn's events to the outcome."""

    client_id: str
    future: asyncio.Future[str]
    on_text: Callable[[str], None] | None
    turn: int | None = None
    text: str = ""
    bound_epoch: str | None = None

    def feed(self, ev: Event) -> bool:
        """Apply one event of the turn; True when the turn is over."""
        kind = ev.get("type")
        if kind == "turn_start" and ev.get("attempt", 1) != 1:
            self._set_text("")  # a new attempt restarts the reply
        elif kind == "delta":
            self._set_text(self.text + str(ev.get("text", "")))
        elif kind == "reply":
            _resolve(self.future, str(ev.get("text", self.text)))
            return True
        elif kind == "cancelled":
            _fail(self.future, TurnCancelled(self.turn or 0, str(ev.get("text", ""))))
            return True
        elif kind == "turn_error":
            _fail(self.future, TurnFailed(self.turn or 0, str(ev.get("code", "turn_failed")),
                                          str(ev.get("message", ""))))
            return True
        return self.future.done()

    def _set_text(self, text: str) -> None:
        self.text = text
        if self.on_text is not None and not self.future.done():
            try:
                self.on_text(text)
            except Exception as exc:  # the caller's callback: fail its ask, not the client
                _fail(self.future, exc)


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
        fut.exception()  # retrieved: no "never retrieved" warning if nobody awaits it


# ---------------------------------------------------------------- the client


class AgentiaClient:
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
    ) -> None:
        self._urls = [urls] if isinstance(urls, str) else list(urls)
        if not self._urls:
            raise ValueError("at least one URL is needed")
        for u in self._urls:
            try:
                parse_uri(u)
            except InvalidURI as exc:
                raise ValueError(f"not a ws:// or wss:// URL: {u!r}") from exc
        if session is not None and not SESSION_ID_RE.fullmatch(session):
            raise ValueError("session id must match [A-Za-z0-9_.:-]{1,64}")
        if heartbeat_s is not None and heartbeat_s <= 0:
            raise ValueError("heartbeat_s must be positive")
        if after is not None and after < 0:
            raise ValueError("after must be >= 0")
        if max_pending < 1 or request_timeout <= 0 or open_timeout <= 0:
            raise ValueError("max_pending >= 1, request_timeout > 0, open_timeout > 0 required")
        self._token = token
        self._session = session
        self._heartbeat_s = heartbeat_s
        self._start_after = after
        self._start_epoch = epoch
        self._backoff = backoff or Backoff()
        self._pace = pace_requests
        self._ack_timeout = ack_timeout
        self._request_timeout = request_timeout
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._keepalive_s = keepalive_s
        self._max_message_bytes = max_message_bytes
        self._trace_fn = trace
        self._connect_kwargs = dict(connect_kwargs or {})

        self.stats: Counter[str] = Counter()
        """Counters: connect_attempts, connections, reconnects, close_<code>, resumes,
        resets, retries, resent, error_<code>, pings, events."""
        self.last_close: tuple[int | None, str] | None = None
        self._tracker = Tracker(max_events, on_apply=self._on_apply, on_reset=self._on_reset)
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
        self._not_before = 0.0
        self._bucket = _Bucket(5.0, 20.0)
        self._url_not_before: dict[str, float] = {}
        self._next_url = 0
        self._generation = 0

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
        if not text.strip():
            raise ValueError("text must not be empty or only whitespace")
        cid = id if id is not None else uuid.uuid4().hex
        if not 1 <= len(cid) <= MAX_CLIENT_ID:
            raise ValueError(f"id must be 1-{MAX_CLIENT_ID} characters")
        if self._conn is not None:
            self._check_size(_Request("send", id=cid, text=text), self._conn.limits)
        req = _Request("send", asyncio.get_running_loop().create_future(), id=cid, text=text)
        try:
            async with asyncio.timeout(self._ack_timeout):
                ack: Ack = await self._submit(req)
                return ack
        except TimeoutError:
            if req.future is not None and req.future.done() and not req.future.cancelled():
                return req.future.result()  # type: ignore[no-any-return]
            raise SendTimeout(cid, self._ack_timeout or 0.0) from None

    async def cancel(self, turn: int | None = None) -> int:
        """Cancel a pending or running turn (``None``: the oldest unfinished one).

        Returns the turn being cancelled; its outcome arrives as a ``cancelled`` event (or
        its ``reply`` if it finished first). Raises :class:`RequestError` with code
        ``turn_not_active`` when there is no such turn, and :class:`ConnectionLost` when the
        connection dropped with the cancel in flight (it is not re-sent: without a turn it
        could stop the next one).
        """
        if turn is not None and turn < 1:
            raise ValueError("turn must be >= 1")
        req = _Request("cancel", asyncio.get_running_loop().create_future(), turn=turn)
        async with asyncio.timeout(self._ack_timeout):
            result: int = await self._submit(req)
            return result

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

        ``on_text`` is called with the reply so far after each ``delta`` (and with ``""``
        when a new attempt of the turn restarts it). Raises :class:`TurnCancelled` (with the
        partial text), :class:`TurnFailed` (``turn_error``), :class:`SessionReset` or the
        errors of :meth:`send`. It waits as long as the turn runs (the edge ends every turn,
        at the latest with ``turn_timeout``); wrap it in ``asyncio.timeout`` to wait less.
        Cancelling ``ask`` stops the wait, not the turn: use :meth:`cancel` for that.
        """
        cid = uuid.uuid4().hex
        waiter = _Waiter(cid, asyncio.get_running_loop().create_future(), on_text)
        self._by_id[cid] = waiter
        try:
            ack = await self.send(text, id=cid)
            self._bind(waiter, ack.offset)
            return await waiter.future
        finally:
            self._by_id.pop(cid, None)
            if waiter.turn is not None and self._by_turn.get(waiter.turn) is waiter:
                del self._by_turn[waiter.turn]
            if not waiter.future.done():
                waiter.future.cancel()

    def events(self) -> AsyncIterator[Event | Reset]:
        """The session's events, each offset once and in order, across reconnects.

        Buffering starts at :meth:`connect`, so nothing is missed before iterating. A
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

    # ------------------------------------------------------------ supervisor

    async def _run(self) -> None:
        failures = 0  # attempts in a row without a welcome
        unstable = 0  # connections in a row that ended quickly
        try:
            while True:
                url = self._urls[self._next_url % len(self._urls)]
                self._next_url += 1
                self.stats["connect_attempts"] += 1
                try:
                    ws = await self._open(url)
                    welcomed, code, reason, lasted = await self._serve(ws, url)
                except _Retry as retry:
                    welcomed, code, reason, lasted = False, None, repr(retry.cause), 0.0
                    if retry.retry_after:
                        self._url_not_before[url] = time.monotonic() + retry.retry_after
                    log.info("connecting to %s failed: %r", url, retry.cause)
                    cause: BaseException | None = retry.cause
                else:
                    cause = None
                    self.last_close = (code, reason)
                    self.stats[f"close_{code}"] += 1
                    log.info("connection to %s closed: %s %s", url, code, reason)
                    if close_action(code) == "stop":
                        raise ServerClosed(code, reason)
                if welcomed:
                    failures = 0
                    unstable = 0 if lasted >= STABLE_AFTER_S else unstable + 1
                    n = unstable - 1
                else:
                    failures += 1
                    limit = self._backoff.max_attempts
                    if limit is not None and failures >= limit:
                        raise ReconnectFailed(failures, cause)
                    n = failures - 1 + unstable
                nxt = self._urls[self._next_url % len(self._urls)]
                hold = self._url_not_before.get(nxt, 0.0) - time.monotonic()
                await asyncio.sleep(max(self._backoff.delay(max(n, 0)), hold))
        except Exception as exc:
            err: BaseException = exc
            while isinstance(err, BaseExceptionGroup) and len(err.exceptions) == 1:
                err = err.exceptions[0]
            if not isinstance(err, ClientError):
                log.error("the Agentia client stopped on an unexpected error", exc_info=err)
            self._fatal = err
            self._fail_all(err)
        finally:
            self._progress.set()
            self._app_ready.set()

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
        target = session_url(url, self._session)
        try:
            return await connect(target, **kwargs)
        except InvalidStatus as exc:
            status = exc.response.status_code
            reason = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body \
                else ""
            self.stats[f"http_{status}"] += 1
            if status in (401, 403):
                raise AuthenticationError(status, reason, url) from None
            if status in _RETRY_STATUSES:
                raise _Retry(exc, _retry_after(exc.response.headers.get("Retry-After"))) \
                    from None
            raise ConnectError(status, reason, url) from None
        except (OSError, TimeoutError, EOFError, InvalidHandshake) as exc:
            raise _Retry(exc) from exc

    async def _serve(self, ws: ClientConnection,
                     url: str) -> tuple[bool, int | None, str, float]:
        """Run one connection to its end: (welcomed, close code, reason, seconds open)."""
        started = time.monotonic()
        try:
            welcome = await self._welcome(ws)
        except (_Disconnected, TimeoutError, ConnectionClosed, orjson.JSONDecodeError) as exc:
            await self._shut(ws)
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
        return True, ws.close_code, ws.close_reason or "", time.monotonic() - started

    async def _shut(self, ws: ClientConnection) -> None:
        if ws.state is not State.CLOSED:
            with contextlib.suppress(Exception):
                await ws.close()

    async def _welcome(self, ws: ClientConnection) -> dict[str, Any]:
        raw = await asyncio.wait_for(ws.recv(), self._open_timeout)
        frame = orjson.loads(raw)
        if not isinstance(frame, dict) or frame.get("type") != "welcome":
            raise _Disconnected(f"expected welcome, got {raw!r:.200}")
        self._trace("in", frame)
        return frame

    def _on_welcome(self, conn: _Conn, welcome: dict[str, Any]) -> None:
        t = self._tracker
        sid, epoch, offset = welcome.get("session"), welcome.get("epoch"), welcome.get("offset")
        if self._session is None and isinstance(sid, str):
            self._session = sid
        epoch = epoch if isinstance(epoch, str) else ""
        offset = offset if isinstance(offset, int) else 0
        self.stats["connections"] += 1
        self._generation += 1
        if t.started:
            self.stats["reconnects"] += 1
            t.need_resume = not t.in_sync_with(epoch, offset)
        elif self._start_after is not None:
            t.start_at(self._start_after, self._start_epoch)
        else:
            t.start_live(epoch, offset)
        self._bucket = _Bucket(conn.limits.rate_per_s, conn.limits.burst)
        self._not_before = 0.0
        self._conn = conn
        self._connected.set()
        self._progress.set()
        self._wake.set()
        log.info("connected to %s (node %s), session %s, epoch %s, offset %s", conn.url,
                 conn.node, self._session, epoch, offset)

    def _on_disconnect(self, conn: _Conn) -> None:
        self._conn = None
        self._connected.clear()
        self._tracker.end_connection()
        req = conn.outstanding
        if req is not None and req.kind == "cancel" and req.future is not None:
            _fail(req.future, ConnectionLost("the connection dropped with the cancel in flight"))
        if conn.answer is not None and not conn.answer.done():
            conn.answer.cancel()

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

    def _on_frame(self, conn: _Conn, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        req = conn.outstanding
        if kind not in CONTROL_FRAMES:
            if isinstance(frame.get("offset"), int):
                self.stats["events"] += 1
                self._tracker.on_event(frame)
            return  # an unknown frame type: ignored, as the protocol asks
        if kind == "pong":
            return
        if kind == "resumed":
            if req is not None and req.kind == "resume" and self._tracker.buffering:
                reset = self._tracker.on_resumed(frame.get("recovered") is True,
                                                 _int(frame.get("offset")),
                                                 str(frame.get("epoch", "")))
                self.stats["resets"] += reset is not None
                self._answer(conn, frame)
            elif frame.get("recovered") is False:
                self.stats["resets"] += 1
                self._tracker.on_unrequested_reset(_int(frame.get("offset")),
                                                   str(frame.get("epoch", "")))
            return
        if req is not None and self._answers(req, frame):
            self._answer(conn, frame)
        else:
            self.stats[f"unexpected_{kind}"] += 1
            log.warning("unexpected %s frame: %.300r", kind, frame)

    @staticmethod
    def _answers(req: _Request, frame: dict[str, Any]) -> bool:
        kind = frame.get("type")
        if kind == "ack":
            return req.kind == "send" and frame.get("id") == req.id
        if kind == "cancelling":
            return req.kind == "cancel"
        if kind == "error":
            ref = frame.get("ref")
            return ref is None or (req.kind == "send" and ref == req.id)
        return False

    def _answer(self, conn: _Conn, frame: dict[str, Any]) -> None:
        if conn.answer is not None and not conn.answer.done():
            conn.answer.set_result(frame)

    async def _pump(self, conn: _Conn) -> None:
        """Write requests one at a time; each waits for its answer (or a reconnect)."""
        while True:
            req = self._pick()
            if req is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._run_request(conn, req)

    def _pick(self) -> _Request | None:
        t = self._tracker
        if t.need_resume and not t.buffering:
            after, epoch = t.resume_args()
            return _Request("resume", after=after, epoch=epoch)
        while self._requests and self._requests[0].abandoned:
            self._requests.popleft()
        return self._requests[0] if self._requests else None

    async def _run_request(self, conn: _Conn, req: _Request) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._gate()
            if req.abandoned:
                return
            if req.kind == "send":
                try:
                    self._check_size(req, conn.limits)
                except RequestError as exc:
                    assert req.future is not None
                    _fail(req.future, exc)
                    return
            if self._pace:
                self._bucket.take(time.monotonic())
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
            if self._settle(req, frame):
                return

    def _settle(self, req: _Request, frame: dict[str, Any]) -> bool:
        """Handle a request's answer; False when it must be sent again."""
        if frame.get("type") == "error":
            err = RequestError.from_frame(frame)
            self.stats[f"error_{err.code}"] += 1
            if err.retryable:
                ms = err.retry_after_ms if err.retry_after_ms is not None else 1000
                now = time.monotonic()
                self._not_before = max(self._not_before, now + ms / 1000 + 0.02)
                if err.code == "rate_limited":
                    self._bucket.empty(now)
                self.stats["retries"] += 1
                log.info("%s %s refused (%s), retrying in %d ms", req.kind, req.id, err.code, ms)
                return False
            if req.future is None:
                raise err  # a resume we built ourselves was refused: a bug, stop
            _fail(req.future, err)
            return True
        if req.future is None:
            return True
        if req.kind == "send":
            ack = Ack(req.id, _int(frame.get("offset")), frame.get("duplicate") is True)
            w = self._by_id.get(req.id)
            if w is not None:
                self._bind(w, ack.offset)
            _resolve(req.future, ack)
        else:
            _resolve(req.future, _int(frame.get("turn")))
        return True

    async def _gate(self) -> None:
        while True:
            now = time.monotonic()
            wait = self._not_before - now
            if self._pace:
                wait = max(wait, self._bucket.wait(now))
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    async def _await_answer(self, conn: _Conn, req: _Request,
                            answer: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(answer), self._request_timeout)
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

    # ------------------------------------------------------------ events and turns

    def _on_apply(self, ev: Event) -> None:
        kind = ev.get("type")
        if kind == "user":
            cid = ev.get("id")
            w = self._by_id.get(cid) if isinstance(cid, str) else None
            if w is not None:
                self._bind(w, ev["offset"])
            return
        turn = ev.get("turn")
        w = self._by_turn.get(turn) if isinstance(turn, int) else None
        if w is not None and w.feed(ev):
            del self._by_turn[w.turn or 0]

    def _bind(self, w: _Waiter, turn: int) -> None:
        if w.turn is None and not w.future.done():
            w.turn, w.bound_epoch = turn, self._tracker.epoch
            self._by_turn[turn] = w

    def _on_reset(self, reset: Reset) -> None:
        if not reset.epoch_changed:
            for w in self._by_turn.values():
                w.text = ""  # the rebuild replays what the log holds; the reply still comes
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

    # ------------------------------------------------------------ helpers

    def _check_running(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise ClientClosed("the client is closed")
        if self._task is None:
            raise ClientClosed("call connect() first")

    @staticmethod
    def _check_size(req: _Request, limits: Limits) -> None:
        if len(req.text) > limits.max_text_chars:
            raise RequestError("bad_frame", f"text is longer than {limits.max_text_chars} "
                               "characters", ref=req.id)
        if len(orjson.dumps(req.frame())) > limits.max_frame_bytes:
            raise RequestError("bad_frame", f"the frame is larger than "
                               f"{limits.max_frame_bytes} bytes", ref=req.id)

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


class _EventIterator:
    __slots__ = ("_client",)

    def __init__(self, client: AgentiaClient) -> None:
        self._client = client

    def __aiter__(self) -> _EventIterator:
        return self

    async def __anext__(self) -> Event | Reset:
        return await self._client.next_event()


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0
