"""The per-connection state machine of ``agentia.v1``: frames and events in, actions out.

Sans-I/O, like python-websockets' ``protocol.py``: nothing here awaits, reads a clock or
touches a socket or the bus. :class:`SessionProtocol` takes a client frame
(:meth:`~SessionProtocol.receive`), a live session event (:meth:`~SessionProtocol.on_event`),
a page read from the log (:meth:`~SessionProtocol.on_replay_page`) or the outcome of a bus
call, and returns what to do: :class:`Write`, :class:`Close`, :class:`Submit`,
:class:`Replay`, :class:`CancelTurn`, :class:`ApproveCall` (``gateway/actions.py``,
re-exported here). ``gateway/connection.py`` only executes them. Only this object touches the
connection's :class:`~gateway.protocol.Cursor`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import orjson

from agentia.codes import AgentiaError, CloseCode, ErrorCode, SessionLost
from gateway import chunks
from gateway import protocol as P
from gateway.actions import (
    FILL,
    READ_PARTIAL,
    Action,
    ApproveCall,
    CancelTurn,
    Close,
    ReadLog,
    ReadPartial,
    Replay,
    Submit,
    Write,
)
from gateway.drops import TRANSCRIPT
from gateway.send_budget import SendBudget
from sessions import events as E
from sessions.bus import frame_for
from sessions.roles import ChunkAt, Partial

__all__ = [  # the actions (gateway/actions.py) are re-exported: S.Write etc. as before
    "FILL", "READ_PARTIAL", "REPLAY_FIRST_PAGE", "REPLAY_PAGE", "STRIKES", "Action",
    "ApproveCall", "CancelTurn", "Close", "ReadLog", "ReadPartial", "Replay", "Rules",
    "SessionProtocol", "Submit", "Write",
]

REPLAY_PAGE = 200
"""Most events read from the log at once; fewer when they are large (see ``_page``)."""
REPLAY_FIRST_PAGE = 4
STRIKES = frozenset((ErrorCode.BAD_JSON, ErrorCode.BAD_FRAME))
"""Errors that count as a strike (besides rate-limit hits while told to wait, and internal
failures: a client must not get expensive failures for free)."""
_SEND, _CATCH_UP = P.Delivery.SEND, P.Delivery.CATCH_UP
_WRITE, _READ = chunks.Verdict.WRITE, chunks.Verdict.READ_PARTIAL
_FLOOD = "too many bad or rate-limited frames"


@dataclass(slots=True)
class Rules:
    """What every connection of one edge shares: its limits and its plain counters."""

    limits: P.Limits
    send_stall_s: float
    metrics: Counter[str]


@dataclass(slots=True)
class _Fill:
    """A replay in progress (one at a time per connection)."""

    resume: P.Resume | None
    epoch: str | None
    current: str
    count: int = REPLAY_FIRST_PAGE
    recovered: bool = True
    last: int = 0
    """Events in the last page read."""
    next: int = REPLAY_FIRST_PAGE


class SessionProtocol(SendBudget):
    """Everything the edge keeps per connection besides the socket (kept small on purpose);
    its send-budget checks (:meth:`on_write`, :meth:`must_pace`, ...) are
    ``gateway/send_budget.py``'s."""

    __slots__ = ("_fill", "agent", "bucket", "chunk_at", "cursor", "epoch", "last_seen",
                 "operator", "pings", "retry_at", "rules", "session", "strikes", "token_exp",
                 "user")
    rules: Rules

    def __init__(self, rules: Rules, session: str, user: str, token_exp: float | None,
                 now: float, agent: str = "", operator: bool = False) -> None:
        self.rules = rules
        self.session = session
        self.user = user
        self.operator = operator
        """A token with ``sessions:operate``: joins any existing session; its sends are
        ``message`` events of role ``operator`` (docs/backend.md)."""
        self.agent = agent
        """The agent asked for (``?agent=``), then the session's once opened."""
        self.token_exp = token_exp
        # deferring until opened: an event appended meanwhile is caught up by on_opened
        self.cursor = P.Cursor(0, catching_up=True)
        self.bucket = P.TokenBucket(rules.limits.rate_per_s, rules.limits.burst)
        self.strikes = P.Strikes()
        self.last_seen = now
        self.epoch = ""
        self.retry_at = 0.0
        """When the last rate_limited error said the client could send again."""
        self.pings: P.TokenBucket | None = None
        """The allowance of ``ping`` frames and WebSocket PINGs, made at the first ping."""
        self._fill: _Fill | None = None
        self.chunk_at: ChunkAt | None = None
        """The run of the last chunk written (or being caught up) and its ``seq``."""

    # ------------------------------------------------------------ session

    def on_opened(self, welcome: bytes, epoch: str, offset: int) -> list[Action]:
        """The session is open in Redis at ``offset``: welcome, then fill what came since."""
        self.epoch = epoch
        self.cursor.sent = offset
        out: list[Action] = [Write(welcome)]
        if self.cursor.finish_catch_up():
            out.append(FILL)
        return out

    def on_event(self, offset: int, frame: bytes) -> bytes | Replay | None:
        """A live event of the session: ``frame`` to write it (a :class:`Write` unwrapped:
        this runs once per event and connection, and the wrapper cost a sixth of it), a fill
        of the gap first, or nothing."""
        decision = self.cursor.on_live(offset)
        if decision is _SEND:
            return frame
        return FILL if decision is _CATCH_UP else None

    def on_behind(self, offset: int) -> Replay:
        """The live event at ``offset`` (``on_event`` said to write it) does not fit the send
        budget next to what the client has not taken yet: not queued, and not a SLOW close.
        The connection falls behind and fills from the log at the pace the client reads
        (:meth:`must_pace`), live events deferred meanwhile; a client that takes nothing for
        ``send_stall_s`` is closed SLOW by that fill. A burst of one session that came in one
        read of the node's stream (hundreds of events in one pass of the loop, before the
        client could read any) closed a client that reads as SLOW before issue 13's session
        13; the budget bounds what is queued, the log holds the rest."""
        self.cursor.fell_behind(offset)
        self.rules.metrics["fell_behind"] += 1
        return FILL

    def on_chunk(self, at: ChunkAt, frame: bytes) -> bytes | ReadPartial | None:
        """A chunk of a running turn: ``frame`` to write it (in ``seq`` order, each once), a
        read of the partial when this connection missed earlier chunks of the run, or
        nothing (a duplicate, an older run's, or while the log is being replayed: a chunk
        must not overtake its ``turn_start``)."""
        if self._fill is not None or self.cursor.catching_up:
            return None
        self.chunk_at, verdict = chunks.on_chunk(self.chunk_at, at)
        if verdict is _WRITE:
            return frame
        return READ_PARTIAL if verdict is _READ else None

    def on_live_frame(self) -> bool:
        """Whether to write an off-log frame of the session (an interim ``transcript``):
        only to a connection that is live, not while it is being welcomed or replays the
        log (a resuming client does not get them; the final one is in the log)."""
        return self._fill is None and not self.cursor.catching_up

    def on_partial(self, partial: Partial | None) -> list[Action]:
        """The running turn's text so far, read from Redis (None: none, or unreadable)."""
        self.chunk_at, write = chunks.on_partial(self.chunk_at, partial)
        if not write or partial is None:
            return []
        return [Write(orjson.dumps(E.partial(partial.turn, partial.attempt, partial.seq,
                                             partial.text)), droppable=True)]

    def on_dropped(self, kind: str) -> None:
        """A ``chunk``, ``partial`` or interim ``transcript`` had no room in the send budget:
        dropped, not SLOW (gateway/drops.py); the run's next tenth chunk brings a partial."""
        self.rules.metrics[f"dropped_{kind}"] += 1
        if kind != TRANSCRIPT:
            self.chunk_at = chunks.on_dropped(self.chunk_at)

    def on_delivery_lost(self) -> Replay | None:
        """The node's delivery stream was unreadable for a while: re-read the log."""
        if self.cursor.catching_up:
            return None
        self.cursor.catching_up = True
        return FILL

    def on_reopened(self, epoch: str, offset: int) -> Action | None:
        """Redis forgot the node and the session was opened again: a new epoch means the
        state was lost (tell the client); a higher offset means events to read from the log."""
        cur = self.cursor
        if self.epoch != epoch:
            self.epoch = epoch
            cur.sent = cur.seen = offset
            return Write(P.resumed_frame(False, offset, epoch, solicited=False).encode())
        if offset > cur.sent and not cur.catching_up:
            cur.seen = max(cur.seen, offset)
            cur.catching_up = True
            return FILL
        return None

    # ------------------------------------------------------------ frames in

    def receive(self, raw: str | bytes, now: float) -> list[Action]:
        """One client frame: the actions it asks for, or its error (and perhaps a close)."""
        self.last_seen = now
        m = self.rules.metrics
        m["frames_in"] += 1
        m["bytes_in"] += len(raw)
        try:
            frame = P.parse_frame(raw, self.rules.limits.max_text_chars)
            return self._dispatch(frame, now)
        except AgentiaError as err:
            return self.on_failure(err, None, now)

    def _dispatch(self, frame: P.ClientFrame, now: float) -> list[Action]:
        if isinstance(frame, P.Ping):
            if not self.ping_allowed(now):
                assert self.pings is not None
                return self._rate_limited(self.pings, now, None)
            return [Write(P.pong_frame(frame.data).encode())]
        if not self.bucket.take(now):
            return self._rate_limited(self.bucket, now, frame.id)
        if isinstance(frame, P.Send):
            return [Submit(frame)]
        if isinstance(frame, P.Resume):
            return [Replay(frame)]
        if isinstance(frame, P.Approve):
            return [ApproveCall(frame)]
        return [CancelTurn(frame)]

    def _rate_limited(self, bucket: P.TokenBucket, now: float, ref: str | None) -> list[Action]:
        out: list[Action] = []
        # A strike only for a client that did not wait as long as it was told to.
        if now < self.retry_at and self.strikes.hit(now):
            out.append(Close(CloseCode.FLOOD, "kept sending while rate limited"))
        wait = bucket.retry_after_ms()
        self.retry_at = now + wait / 1000
        err = AgentiaError(ErrorCode.RATE_LIMITED, "too many frames, slow down", ref, wait)
        return out + self.on_failure(err, None, now)

    def ping_allowed(self, now: float) -> bool:
        """Take one ping from the allowance shared by ``ping`` frames and WebSocket PINGs."""
        if self.pings is None:
            lim = self.rules.limits
            self.pings = P.TokenBucket(lim.ping_rate_per_s, lim.ping_burst)
        return self.pings.take(now)

    def on_ws_ping(self, now: float) -> Close | None:
        """A WebSocket PING arrived: None to answer it; over the allowance, a FLOOD close."""
        return None if self.ping_allowed(now) else Close(CloseCode.FLOOD, "too many pings")

    # ------------------------------------------------------------ outcomes of bus calls

    def on_submitted(self, frame: P.Send, offset: int, duplicate: bool) -> list[Action]:
        self.rules.metrics["turns_accepted"] += 0 if duplicate else 1
        return [Write(P.ack_frame(frame.id, offset, duplicate).encode())]

    def on_cancelled(self, frame: P.Cancel, turn: int | None, now: float) -> list[Action]:
        if not turn:
            err = AgentiaError(ErrorCode.TURN_NOT_ACTIVE, "no such turn is pending or running")
            return self.on_failure(err, frame, now)
        reply: dict[str, object] = {"type": "cancelling", "turn": turn}
        if frame.id is not None:
            reply["id"] = frame.id
        return [Write(P.encode(reply).encode())]

    def on_approved(self, frame: P.Approve, offset: int) -> list[Action]:
        """The decision is recorded (its ``approval_result`` is at ``offset``)."""
        self.rules.metrics["approvals"] += 1
        return [Write(P.ack_frame(frame.id, offset, False).encode())]

    def on_failure(self, err: Exception, frame: P.ClientFrame | None,
                   now: float) -> list[Action]:
        """A frame failed: its error, and a close for a lost session or too many strikes.
        Anything but an :class:`AgentiaError` is answered ``internal`` (the caller logs it)."""
        m = self.rules.metrics
        if not isinstance(err, AgentiaError):
            m["error:internal"] += 1
            err = AgentiaError(ErrorCode.INTERNAL, "internal error")
            strike = True
        else:
            if err.ref is None and isinstance(frame, P.Send | P.Resume | P.Cancel | P.Approve):
                err.ref = frame.id
            m[f"error:{err.code}"] += 1
            strike = err.code in STRIKES
        out: list[Action] = [Write(P.error_frame(err).encode())]
        if isinstance(err, SessionLost):
            out.append(Close(CloseCode.SESSION_LOST, "session state was lost: reconnect"))
        elif strike and self.strikes.hit(now):
            out.append(Close(CloseCode.FLOOD, _FLOOD))
        return out

    # ------------------------------------------------------------ replay

    def begin_replay(self, replay: Replay) -> None:
        """Start a replay (after any other has ended): a resume moves the cursor back."""
        if replay.frame is not None:
            self.cursor.start_catch_up(replay.frame.after)
        epoch = replay.frame.epoch if replay.frame is not None else None
        self._fill = _Fill(replay.frame, epoch, epoch or self.epoch)

    def replay_request(self) -> ReadLog | None:
        """The next page to read, or None when the replay is over."""
        f = self._fill
        return None if f is None else ReadLog(self.cursor.sent, f.epoch, f.count)

    def on_replay_page(self, events: list[tuple[int, bytes]], recovered: bool, epoch: str,
                       offset: int) -> list[Write]:
        """A page read from the log: the events to write, paced, before :meth:`page_written`.
        A gap (``recovered`` False) moves the cursor to what the log still has."""
        f, cur = self._fill, self.cursor
        assert f is not None
        f.current = epoch
        if not recovered:
            f.recovered, f.epoch = False, None
            cur.sent = events[0][0] - 1 if events else offset
        f.last, f.next = len(events), self._page(events)
        return [Write(frame_for(o, e), True) for o, e in events if cur.on_replayed(o)]

    def page_written(self) -> list[Action] | ReadPartial | None:
        """The page's events are written: None to read another page; for a resume whose log
        is all written, ``READ_PARTIAL`` (read the running turn's text, then
        :meth:`resume_ends`); else the fill is over (``[]``). Only then may live events flow
        again: ended earlier, one could overtake the page's last events while they wait for
        the client to read."""
        f, cur = self._fill, self.cursor
        assert f is not None
        if f.last >= f.count or cur.seen > cur.sent:  # more to read
            f.count = f.next
            return None
        if f.resume is not None:
            return READ_PARTIAL  # still catching up: nothing live may overtake the answer
        cur.finish_catch_up()
        self._fill = None
        return []

    def resume_ends(self, partial: Partial | None) -> list[Action] | None:
        """The running turn's text, read once a resume's log was written (None: none, or
        unreadable): the answer's end (that partial, then ``resumed``), after which live
        events flow; or None when events were appended while it was read: another page
        first. Live events wait until ``resumed`` is written: one written during the read
        reached the client ahead of a ``resumed`` whose ``offset`` was already stale
        (the Locust reconnect storm counted it out of order at load average 20)."""
        f, cur = self._fill, self.cursor
        assert f is not None and f.resume is not None
        if cur.finish_catch_up():
            return None
        self._fill = None
        return [*self.on_partial(partial),
                Write(P.resumed_frame(f.recovered, cur.sent, f.current, f.resume.id).encode())]

    def on_replay_failed(self) -> None:
        """The bus failed during a replay: stop deferring (the next live event retries)."""
        self._fill = None
        self.cursor.catching_up = False

    def _page(self, events: list[tuple[int, bytes]]) -> int:
        """Events to read next: about half the send budget's worth, judged by the last page
        (a page is held in memory while it is paced out)."""
        size = sum(len(e) for _, e in events) // max(1, len(events)) + 16
        return max(1, min(REPLAY_PAGE, self.rules.limits.send_budget_bytes // 2 // size))

    # ------------------------------------------------------------ housekeeping

    def sweep(self, now: float, wall: float, leeway: float) -> Close | None:
        """The periodic check: idle for too long, or the token expired."""
        if now - self.last_seen > self.rules.limits.idle_timeout_s:
            return Close(CloseCode.IDLE, "idle: no frame within the idle timeout")
        if self.token_exp is not None and wall > self.token_exp + leeway:
            return Close(CloseCode.TOKEN_EXPIRED, "token expired: reconnect")
        return None
