"""The ``agentia.v1`` wire protocol: frames, validation and per-connection state.

Pure and loop-free: nothing here imports asyncio or does I/O. Time is passed in as a float
(seconds, monotonic) so every rule can be tested by feeding values. The per-connection state
machine built from these rules is ``gateway/session_protocol.py``; the I/O layer
(``gateway/connection.py``) turns its decisions into socket writes and bus calls.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeGuard

import orjson

from agentia import PROTOCOL
from agentia.codes import AgentiaError, ErrorCode, ProtocolError

MAX_CLIENT_ID = 64
MAX_STRIKES = 20
"""Protocol violations (bad frames, rate-limit hits) a connection may commit before it is
closed with ``FLOOD``; the count decays by one per ``STRIKE_DECAY_S`` seconds."""
STRIKE_DECAY_S = 1.0
MAX_NUMBER = 10**12
"""Largest ``resume.after`` and ``cancel.turn`` accepted: far above any real offset, and small
enough that Redis and its Lua scripts print it as an integer (Lua's ``%.14g`` turns 1e15
into ``1e+15``, which XRANGE refuses)."""
MAX_EPOCH = 64
MAX_PING_BYTES = 4096
"""A ``ping`` frame's size limit: its ``data`` is echoed, so it must stay small."""
MAX_DEPTH = 32
"""Nesting levels allowed in ``ping.data`` (the JSON parser accepts 1,024, the encoder 255)."""
MAX_ECHO = 80
MAX_CALL_ID = 128
"""Longest ``approve.call_id`` accepted (models' tool call ids are ~30-40 characters)."""
MAX_APPROVAL_MESSAGE = 1_000
"""Characters of an ``approve.message`` (shown to the model with a rejection)."""
"""Characters of an unknown ``type`` echoed in the error message."""


# ---------------------------------------------------------------- client frames


@dataclass(frozen=True, slots=True)
class Send:
    id: str
    text: str


@dataclass(frozen=True, slots=True)
class Resume:
    after: int
    epoch: str | None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    turn: int | None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Approve:
    id: str
    call_id: str
    approved: bool
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    data: Any


ClientFrame = Send | Resume | Cancel | Approve | Ping


def parse_frame(raw: str | bytes, max_text: int) -> ClientFrame:
    """Decode and validate one client frame, or raise :class:`ProtocolError`."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError(ErrorCode.BAD_JSON, "frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "frame must be a JSON object")
    kind = obj.get("type")
    ref = obj.get("id") if isinstance(obj.get("id"), str) else None
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        # echo only a string, and only its start: repr() of a client's nested value costs
        # time and can overflow the stack (1,000 levels)
        what = f"unknown frame type {_clip(repr(kind[:MAX_ECHO]))}" if isinstance(kind, str) \
            else "unknown frame type: 'type' must be a string"
        raise ProtocolError(ErrorCode.BAD_FRAME, what, ref)
    if parser is _parse_ping and len(raw) > MAX_PING_BYTES:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"a ping frame may have at most "
                            f"{MAX_PING_BYTES} bytes")
    return parser(obj, max_text)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO - 3] + "..."


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True if ``value`` nests lists/objects more than ``limit`` levels deep. Iterative, and
    it stops at the first path that is too deep (a ping is at most 4 KiB: ~2,000 nodes)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in node)
    return False


def _bounded_int(value: Any, low: int) -> TypeGuard[int]:
    return (isinstance(value, int) and not isinstance(value, bool)
            and low <= value <= MAX_NUMBER)


def _parse_send(obj: dict[str, Any], max_text: int) -> Send:
    cid, text = obj.get("id"), obj.get("text")
    if not isinstance(cid, str) or not 1 <= len(cid) <= MAX_CLIENT_ID:
        raise ProtocolError(ErrorCode.BAD_FRAME, "send needs an 'id' string of 1-64 characters")
    if not isinstance(text, str) or not text.strip():
        raise ProtocolError(ErrorCode.BAD_FRAME, "send needs a non-empty 'text' string", cid)
    if len(text) > max_text:
        raise ProtocolError(
            ErrorCode.BAD_FRAME, f"'text' is longer than {max_text} characters", cid
        )
    return Send(cid, text)


def _ref(obj: dict[str, Any]) -> str | None:
    """The optional client id of any frame, echoed in its answer and in errors about it."""
    ref = obj.get("id")
    return ref if isinstance(ref, str) and 1 <= len(ref) <= MAX_CLIENT_ID else None


def _parse_resume(obj: dict[str, Any], _max_text: int) -> Resume:
    after, epoch = obj.get("after"), obj.get("epoch")
    if not _bounded_int(after, 0):
        raise ProtocolError(ErrorCode.BAD_FRAME,
                            f"resume needs 'after', an integer from 0 to {MAX_NUMBER}", _ref(obj))
    if epoch is not None and (not isinstance(epoch, str) or len(epoch) > MAX_EPOCH):
        raise ProtocolError(ErrorCode.BAD_FRAME,
                            f"'epoch' must be a string of at most {MAX_EPOCH} characters",
                            _ref(obj))
    return Resume(after, epoch, _ref(obj))


def _parse_cancel(obj: dict[str, Any], _max_text: int) -> Cancel:
    turn = obj.get("turn")
    if turn is not None and not _bounded_int(turn, 1):
        raise ProtocolError(ErrorCode.BAD_FRAME,
                            f"'turn' must be an integer from 1 to {MAX_NUMBER}", _ref(obj))
    return Cancel(turn, _ref(obj))


def _parse_approve(obj: dict[str, Any], _max_text: int) -> Approve:
    cid, call_id = obj.get("id"), obj.get("call_id")
    approved, message = obj.get("approved"), obj.get("message")
    if not isinstance(cid, str) or not 1 <= len(cid) <= MAX_CLIENT_ID:
        raise ProtocolError(ErrorCode.BAD_FRAME,
                            "approve needs an 'id' string of 1-64 characters")
    if not isinstance(call_id, str) or not 1 <= len(call_id) <= MAX_CALL_ID:
        raise ProtocolError(ErrorCode.BAD_FRAME,
                            f"approve needs a 'call_id' string of 1-{MAX_CALL_ID} characters",
                            cid)
    if not isinstance(approved, bool):
        raise ProtocolError(ErrorCode.BAD_FRAME, "approve needs 'approved': true or false", cid)
    if message is not None and (not isinstance(message, str)
                                or len(message) > MAX_APPROVAL_MESSAGE):
        raise ProtocolError(ErrorCode.BAD_FRAME, f"'message' must be a string of at most "
                            f"{MAX_APPROVAL_MESSAGE:,} characters", cid)
    return Approve(cid, call_id, approved, message)


def _parse_ping(obj: dict[str, Any], _max_text: int) -> Ping:
    data = obj.get("data")
    if too_deep(data):
        raise ProtocolError(ErrorCode.BAD_FRAME,
                            f"ping 'data' may nest at most {MAX_DEPTH} levels deep")
    return Ping(data)


_PARSERS: dict[str, Callable[[dict[str, Any], int], ClientFrame]] = {
    "send": _parse_send, "resume": _parse_resume, "cancel": _parse_cancel,
    "approve": _parse_approve, "ping": _parse_ping,
}


# ---------------------------------------------------------------- server frames


def encode(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def welcome_frame(
    *, node: str, session: str, epoch: str, offset: int, limits: dict[str, Any],
    agent: str = ""
) -> str:
    """``agent`` is left out only for a session created while no agent was registered."""
    frame = {"type": "welcome", "protocol": PROTOCOL, "node": node, "session": session,
             "epoch": epoch, "offset": offset, "limits": limits}
    if agent:
        frame["agent"] = agent
    return encode(frame)


def ack_frame(client_id: str, offset: int, duplicate: bool) -> str:
    return encode({"type": "ack", "id": client_id, "offset": offset, "duplicate": duplicate})


def resumed_frame(recovered: bool, offset: int, epoch: str, ref: str | None = None,
                  solicited: bool = True) -> str:
    """The answer to a resume (``id`` echoes the resume's id, if it had one), or, with
    ``solicited=False``, the server's own notice that the session's state was lost."""
    frame: dict[str, Any] = {"type": "resumed", "recovered": recovered, "offset": offset,
                             "epoch": epoch, "solicited": solicited}
    if ref is not None:
        frame["id"] = ref
    return encode(frame)


def pong_frame(data: Any) -> str:
    return encode({"type": "pong", "data": data})


def error_frame(err: AgentiaError) -> str:
    frame: dict[str, Any] = {"type": "error", "code": str(err.code), "message": err.message,
                             "retryable": err.retryable, "ref": err.ref}
    if err.retry_after_ms is not None:
        frame["retry_after_ms"] = err.retry_after_ms
    return encode(frame)


# ---------------------------------------------------------------- per-connection rules


_TOKEN_EPS = 1e-6
"""Rounding slack of :meth:`TokenBucket.take`: (now - stamp) * rate loses up to ~1e-9 of a
token at a monotonic clock of months; a millionth of a token per frame is no extra allowance."""


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        # A token short by float rounding counts as whole: otherwise a client that waited
        # exactly retry_after_ms (rate 25: 40 ms) found 0.9999999999991 tokens and was refused.
        if self.tokens >= 1.0 - _TOKEN_EPS:
            self.tokens = max(0.0, self.tokens - 1.0)
            return True
        return False

    def retry_after_ms(self) -> int:
        return max(1, math.ceil((1.0 - self.tokens) / self.rate * 1000))


class Delivery(enum.Enum):
    """What to do with a live event of the session, given what the connection has seen."""

    SEND = "send"          # next in order: write it
    DROP = "drop"          # already sent (or before this connection's start)
    CATCH_UP = "catch_up"  # a gap: read the missing events from the log first
    DEFER = "defer"        # a catch-up is running; it will cover this event


@dataclass(slots=True)
class Cursor:
    """Which session offsets a connection has been sent: exactly once, in order, no gaps.

    Live events arrive from the node's delivery stream; the log fills any gap. ``sent`` is
    the highest offset written to the socket; ``seen`` the highest offset known to exist.
    """

    sent: int
    seen: int = 0
    catching_up: bool = False

    def on_live(self, offset: int) -> Delivery:
        self.seen = max(self.seen, offset)
        if self.catching_up:
            return Delivery.DEFER
        if offset <= self.sent:
            return Delivery.DROP
        if offset == self.sent + 1:
            self.sent = offset
            return Delivery.SEND
        self.catching_up = True
        return Delivery.CATCH_UP

    def fell_behind(self, offset: int) -> None:
        """The live event at ``offset`` (just given :attr:`Delivery.SEND`) was not queued:
        the client has not yet taken what waits for it. The log covers it and what follows
        (a catch-up, paced by what the client reads)."""
        self.sent = min(self.sent, offset - 1)
        self.catching_up = True

    def start_catch_up(self, after: int) -> None:
        """A resume: the client wants everything after ``after``."""
        self.sent = after
        self.catching_up = True

    def on_replayed(self, offset: int) -> bool:
        """An event read from the log during catch-up; True if it should be written."""
        if offset <= self.sent:
            return False
        self.sent = offset
        self.seen = max(self.seen, offset)
        return True

    def finish_catch_up(self) -> bool:
        """End a catch-up pass; True if events arrived meanwhile and another pass is needed."""
        if self.seen > self.sent:
            return True
        self.catching_up = False
        return False


@dataclass(slots=True)
class Strikes:
    """Counts protocol violations with a slow decay; too many means a flood."""

    count: float = 0.0
    stamp: float = 0.0

    def hit(self, now: float) -> bool:
        """Record a violation; True when the connection should be closed as a flood."""
        self.count = max(0.0, self.count - (now - self.stamp) / STRIKE_DECAY_S) + 1.0
        self.stamp = now
        return self.count > MAX_STRIKES


@dataclass(frozen=True, slots=True)
class Limits:
    """The per-connection limits a client is told in ``welcome`` (values: EdgeSettings)."""

    max_frame_bytes: int
    max_text_chars: int
    rate_per_s: float
    burst: float
    send_queue: int
    send_budget_bytes: int
    ping_rate_per_s: float
    ping_burst: float
    heartbeat_s: float
    idle_timeout_s: float

    def public(self) -> dict[str, Any]:
        return asdict(self)
