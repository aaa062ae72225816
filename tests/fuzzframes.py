"""Generated frames for a live edge, each with the answer docs/protocol.md promises for it.

A *case* is what one client writes at once (one message, maybe fragmented, maybe with
WebSocket control frames between its fragments) and what it must get back: a JSON answer
checked against the contract (sections 3, 4, 7), the WebSocket pongs of its pings, or a close
with a documented code (section 8, RFC 6455). The oracle is written from the documents, not
from the code: it models only what a client can know (its session's offsets, its ids).

``run_connection`` drives one connection through a list of cases over the raw client of
``loadtest/attack/wire.py`` (the libraries' clients refuse to send invalid frames).
"""

from __future__ import annotations

import asyncio
import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadtest.attack import wire as W

MAX_FRAME = 65_536
MAX_TEXT = 16_000
MAX_STRIKES = 20
EVENTS = {"user", "turn_start", "tool", "reply", "cancelled", "turn_error", "call"}
STREAM = {"chunk", "partial"}  # a running turn's reply text: no offset, not log events
Json = Any
Check = Callable[["Session", dict[str, Any]], None]


class Mismatch(AssertionError):
    pass


@dataclass
class Session:
    """What the client knows of its session: the oracle's state, updated as answers arrive."""

    epoch: str = ""
    last: int = 0
    acked: dict[str, int] = field(default_factory=dict)
    cancelled: set[int] = field(default_factory=set)
    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    since_answer: set[int] = field(default_factory=set)
    """Offsets of log events received since the previous answer (a resume's replay)."""


@dataclass
class Case:
    wire: bytes
    frames: int
    check: Check | None = None
    """The JSON answer's check; None when nothing but pongs (or a close) comes back."""
    pongs: list[bytes] = field(default_factory=list)
    close: frozenset[int] = frozenset()
    """Non-empty: the connection must end with one of these close codes after this case."""
    answers_before_close: tuple[int, int] = (0, 0)
    """For a flood: how many ``error`` answers may precede the close (min, max)."""


def _eq(want: dict[str, Any]) -> Check:
    def check(s: Session, got: dict[str, Any]) -> None:
        if got != want:
            raise Mismatch(f"want {want}, got {got}")
    return check


def _error(code: str, ref: str | None) -> Check:
    def check(s: Session, got: dict[str, Any]) -> None:
        if (got.get("type"), got.get("code"), got.get("ref")) != ("error", code, ref) \
                or got.get("retryable") is not False or not isinstance(got.get("message"), str):
            raise Mismatch(f"want error {code} ref={ref!r}, got {got}")
    return check


# ---------------------------------------------------------------- JSON content


def _text(rng: random.Random, n: int) -> str:
    alphabet = string.ascii_letters + string.digits + " .,!?-_\"\\/\n\té€日本😀\u2028"
    return "".join(rng.choice(alphabet) for _ in range(n))


def _value(rng: random.Random, depth: int = 0) -> Json:
    k = rng.randrange(8 if depth < 3 else 5)
    if k == 0:
        return None
    if k == 1:
        return rng.random() < 0.5
    if k == 2:
        return rng.randrange(-2**63, 2**63)
    if k == 3:
        return rng.choice([0.5, -1.25, 1e300, 3.0e-5, 123456.789])
    if k == 4:
        return _text(rng, rng.randrange(12))
    if k in (5, 6):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {_text(rng, rng.randrange(1, 6)): _value(rng, depth + 1)
            for _ in range(rng.randrange(4))}


def _id(rng: random.Random) -> str:
    return _text(rng, rng.randrange(1, 65))


def _bad_id(rng: random.Random) -> Json:
    return rng.choice(["", "x" * 65, 7, None, ["a"], {"a": 1}, True])


# ---------------------------------------------------------------- messages and their answers


def message(rng: random.Random, s: Session, plan: dict[str, Any]) -> tuple[bytes, Check, bool]:
    """One JSON message, its answer's check and whether it is a strike."""
    k = rng.randrange(100)
    if k < 22:
        return _ping(rng)
    if k < 40 and plan["sends"] < 80:
        plan["sends"] += 1
        return _send(rng, plan)
    if k < 50:
        return _resume(rng, s, plan)
    if k < 58:
        return _cancel(rng, plan)
    return _invalid(rng)


def _dump(obj: Json) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def _ping(rng: random.Random) -> tuple[bytes, Check, bool]:
    obj: dict[str, Any] = {"type": "ping"}
    if rng.random() < 0.8:
        obj["data"] = _value(rng)
    if rng.random() < 0.2:
        obj["unknown"] = _value(rng)  # unknown fields are ignored
    return _dump(obj), _eq({"type": "pong", "data": obj.get("data")}), False


def _send(rng: random.Random, plan: dict[str, Any]) -> tuple[bytes, Check, bool]:
    ids: list[str] = plan.setdefault("ids", [])
    dup = bool(ids) and rng.random() < 0.2
    cid = rng.choice(ids) if dup else _id(rng)
    if not dup:
        ids.append(cid)
    text = _text(rng, rng.randrange(1, 60)).strip() or "x"

    def check(s: Session, got: dict[str, Any]) -> None:
        if got.get("type") != "ack" or got.get("id") != cid or set(got) != {
                "type", "id", "offset", "duplicate"}:
            raise Mismatch(f"send {cid!r}: want ack, got {got}")
        if cid in s.acked:
            if got != {"type": "ack", "id": cid, "offset": s.acked[cid], "duplicate": True}:
                raise Mismatch(f"duplicate send {cid!r}: want the first offset, got {got}")
            return
        if got["duplicate"] is not False or got["offset"] <= s.last:
            raise Mismatch(f"send {cid!r}: want a new offset above {s.last}, got {got}")
        s.acked[cid] = s.last = got["offset"]
    return _dump({"type": "send", "id": cid, "text": text}), check, False


def _resume(rng: random.Random, s: Session, plan: dict[str, Any]) -> tuple[bytes, Check, bool]:
    after = rng.randrange(plan["sends"] + 3)
    ref = _id(rng) if rng.random() < 0.7 else None
    wrong_epoch = rng.random() < 0.15
    obj: dict[str, Any] = {"type": "resume", "after": after}
    if wrong_epoch:
        obj["epoch"] = "not-" + s.epoch
    elif rng.random() < 0.5:
        obj["epoch"] = rng.choice([s.epoch, None])
    if ref is not None:
        obj["id"] = ref
    elif rng.random() < 0.3:
        obj["id"] = _bad_id(rng)  # ignored, not echoed

    def check(s: Session, got: dict[str, Any]) -> None:
        recovered = not wrong_epoch and after <= s.last
        want = {"type": "resumed", "recovered": recovered, "offset": s.last, "epoch": s.epoch,
                "solicited": True, **({"id": ref} if ref is not None else {})}
        if got != want:
            raise Mismatch(f"resume after {after}: want {want}, got {got}")
        missing = set(range(after + 1 if recovered else 1, s.last + 1)) - s.since_answer
        if missing:
            raise Mismatch(f"resume after {after}: offsets {sorted(missing)} not replayed")
    return _dump(obj), check, False


def _cancel(rng: random.Random, plan: dict[str, Any]) -> tuple[bytes, Check, bool]:
    turn = None if rng.random() < 0.3 else rng.randrange(1, plan["sends"] + 3)
    ref = _id(rng) if rng.random() < 0.6 else None
    obj: dict[str, Any] = {"type": "cancel", "turn": turn}
    if ref is not None:
        obj["id"] = ref

    def check(s: Session, got: dict[str, Any]) -> None:
        # no worker runs: every acked turn is pending, each one until cancelled
        pending = set(s.acked.values())
        if got.get("type") == "cancelling":
            ok = got.get("turn") in pending and (turn is None or got["turn"] == turn) \
                and got.get("id") == ref and set(got) <= {"type", "turn", "id"}
            if ok:
                s.cancelled.add(got["turn"])
                return
        elif got.get("type") == "error":
            _error("turn_not_active", ref)(s, got)
            live = pending - s.cancelled
            if (turn is None and not live) or (turn is not None and turn not in live):
                return
        raise Mismatch(f"cancel {turn}: pending {sorted(pending)}, got {got}")
    return _dump(obj), check, False


def _invalid(rng: random.Random) -> tuple[bytes, Check, bool]:
    """A frame the contract refuses: (bytes, check for its error, strike)."""
    cid = _id(rng)
    bad_json = [b"{not json", b'{"type": "ping"', b"", b"NaN", b'{"type": "ping",}',
                b"[1, 2", b'"unterminated', b"@", b"{'type': 'ping'}", b"\x00\x01"]
    k = rng.randrange(14)
    if k == 0:
        return rng.choice(bad_json), _error("bad_json", None), True
    cases: list[tuple[Json, str | None]] = [
        (rng.choice([[], 1, "ping", None, True, [{"type": "ping"}]]), None),
        ({"type": rng.choice(["teleport", "", "PING", "Send"]), "id": cid}, cid),
        ({"type": rng.choice([1, None, ["ping"]]), "id": cid}, cid),
        ({"type": "teleport"}, None),
        ({"type": "send", "id": _bad_id(rng), "text": "hi"}, None),
        ({"type": "send", "id": cid, "text": rng.choice(["", "   ", "\n", 5, None])}, cid),
        ({"type": "send", "id": cid}, cid),
        ({"type": "send", "id": cid, "text": "y" * (MAX_TEXT + 1)}, cid),
        ({"type": "resume", "after": rng.choice([-1, 1.5, True, "3", None]), "id": cid}, cid),
        ({"type": "resume", "id": cid}, cid),
        ({"type": "resume", "after": 0, "epoch": rng.choice([1, [], {}]), "id": cid}, cid),
        ({"type": "cancel", "turn": rng.choice([0, -3, 2.5, False, "1"]), "id": cid}, cid),
        ({"type": "cancel", "turn": 0, "id": _bad_id(rng)}, None),
    ]
    obj, ref = cases[k - 1]
    return _dump(obj), _error("bad_frame", ref), True


# ---------------------------------------------------------------- WebSocket framing


def _framed(rng: random.Random, payload: bytes, text: bool) -> tuple[bytes, int, list[bytes]]:
    """The message as 1-4 frames, sometimes with WebSocket pings/pongs between fragments."""
    op = W.TEXT if text else W.BINARY
    parts = rng.choice([1, 1, 1, 2, 3, 4])
    cuts = sorted(rng.randrange(len(payload) + 1) for _ in range(parts - 1))
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    out, frames, pongs = b"", 0, list[bytes]()
    for i, piece in enumerate(pieces):
        if i and rng.random() < 0.3:
            out, frames, pongs = _control(rng, out, frames, pongs)
        out += W.frame(op if i == 0 else W.CONT, piece, fin=i == len(pieces) - 1)
        frames += 1
    return out, frames, pongs


def _control(rng: random.Random, out: bytes, frames: int,
             pongs: list[bytes]) -> tuple[bytes, int, list[bytes]]:
    data = rng.randbytes(rng.randrange(126))
    if rng.random() < 0.75:
        return out + W.frame(W.PING, data), frames + 1, [*pongs, data]
    return out + W.frame(W.PONG, data), frames + 1, pongs  # unsolicited: no answer


def case(rng: random.Random, s: Session, plan: dict[str, Any]) -> tuple[Case, bool]:
    """A non-terminal case and whether it is a strike."""
    if rng.random() < 0.06:
        out, frames, pongs = _control(rng, b"", 0, [])
        return Case(out, frames, None, pongs), False
    payload, check, strike = message(rng, s, plan)
    text = rng.random() < 0.7
    out, frames, pongs = _framed(rng, payload, text)
    return Case(out, frames, check, pongs), strike


def terminal(rng: random.Random, strikes: int) -> Case:
    """A case after which the connection must close, with the code the contract names."""
    ping = b'{"type": "ping", "data": 1}'
    k = rng.randrange(12)
    if k == 0:  # a flood: the frame that brings the strikes above MAX_STRIKES closes 4002
        n = MAX_STRIKES + 1
        out = b"".join(W.frame(W.TEXT, b"{bad") for _ in range(n))
        return Case(out, n, None, close=frozenset({4002}),
                    answers_before_close=(max(1, n - strikes), n))
    options: list[tuple[bytes, int, int]] = [
        (W.frame(W.TEXT, ping, rsv=rng.randrange(1, 8)), 1, 1002),
        (W.frame(W.TEXT, ping, mask=False), 1, 1002),
        (W.frame(rng.choice([3, 4, 5, 6, 7, 11, 12, 15]), ping), 1, 1002),
        (W.frame(W.PING, b"p" * rng.randrange(126, 200)), 1, 1002),
        (W.frame(W.PING, b"p", fin=False), 1, 1002),
        (W.frame(W.CONT, ping), 1, 1002),
        (W.frame(W.TEXT, ping[:5], fin=False) + W.frame(W.TEXT, ping), 2, 1002),
        (W.frame(W.TEXT, b'{"type": "ping", "data": "\xff\xfe"}'), 1, 1007),
        (W.frame(rng.choice([W.TEXT, W.BINARY]), b" " * (MAX_FRAME + 1)), 1, 1009),
        (W.frame(W.TEXT, b" " * MAX_FRAME, fin=False) + W.frame(W.CONT, b"  "), 2, 1009),
        (W.frame(W.CLOSE, W.close_payload(rng.choice([1000, 1001, 4000, 4999]))), 1, 0),
    ]
    out, frames, code = options[k - 1]
    if code == 0:  # the client closes: the edge answers with a close frame (echoing the code)
        sent = int.from_bytes(out[6:8], "big") ^ int.from_bytes(out[2:4], "big")
        return Case(out, frames, None, close=frozenset({sent, 1000}))
    return Case(out, frames, None, close=frozenset({code}))


# ---------------------------------------------------------------- driving one connection


@dataclass
class Tally:
    frames: int = 0
    cases: int = 0
    connections: int = 0
    closes: dict[int, int] = field(default_factory=dict)


async def run_connection(w: W.Wire, rng: random.Random, tally: Tally, n_cases: int,
                         end: bool, timeout: float = 10.0) -> None:
    """``n_cases`` cases in batches, then (``end``) a terminal one or a full-log check."""
    s = Session()
    welcome = await _next_json(w, s, timeout)
    if welcome.get("type") != "welcome":
        raise Mismatch(f"want welcome, got {welcome}")
    s.epoch, s.last = welcome["epoch"], welcome["offset"]
    plan: dict[str, Any] = {"sends": 0}
    strikes, done = 0, 0
    tally.connections += 1
    while done < n_cases:
        batch: list[Case] = []
        while len(batch) < rng.randrange(1, 12) and done + len(batch) < n_cases:
            c, strike = case(rng, s, plan)
            if strike and strikes >= MAX_STRIKES:
                continue  # never above MAX_STRIKES: nothing here may close the connection
            strikes += strike
            batch.append(c)
        w.write(b"".join(c.wire for c in batch))
        await _expect(w, s, batch, timeout)
        done += len(batch)
        tally.frames += sum(c.frames for c in batch)
        tally.cases += len(batch)
    if end:
        c = terminal(rng, strikes)
        w.write(c.wire)
        code = await _expect_close(w, s, c, timeout)
        tally.frames += c.frames
        tally.cases += 1
        tally.closes[code] = tally.closes.get(code, 0) + 1
    else:
        await _whole_log(w, s, timeout)


async def _expect(w: W.Wire, s: Session, batch: list[Case], timeout: float) -> None:
    """The batch's answers, in order; its WebSocket pongs, in order, interleaved anyhow
    with the answers (a library answers a ping when it parses it, before the application
    has answered the messages ahead of it)."""
    pongs = [p for c in batch for p in c.pongs]
    checks = [c.check for c in batch if c.check is not None]
    while pongs or checks:
        f = await _next(w, s, timeout)
        if f.opcode == W.PONG and pongs and f.payload == pongs[0]:
            pongs.pop(0)
        elif f.opcode == W.TEXT and checks:
            checks.pop(0)(s, json.loads(f.payload))
            s.since_answer.clear()
        else:
            raise Mismatch(f"unexpected frame {f} (waiting for pongs {pongs[:1]}, "
                           f"{len(checks)} answers)")


async def _expect_close(w: W.Wire, s: Session, c: Case, timeout: float) -> int:
    errors = 0
    while True:
        f = await _next(w, s, timeout)
        if f.opcode == W.CLOSE:
            break
        if f.opcode == W.TEXT and errors < c.answers_before_close[1]:
            _error("bad_json", None)(s, json.loads(f.payload))  # the flood's frames
            errors += 1
        else:
            raise Mismatch(f"want close {set(c.close)}, got {f} instead")
    code = f.close_code
    lo, hi = c.answers_before_close
    if code not in c.close or not lo <= errors <= hi:
        raise Mismatch(f"want close {set(c.close)} after {lo}-{hi} errors, "
                       f"got {code} after {errors}: {f.payload!r}")
    return int(code or 0)


async def _whole_log(w: W.Wire, s: Session, timeout: float) -> None:
    """The session log holds each acked turn's ``user`` event, offsets 1..last, no gap."""
    s.events.clear()
    w.write(W.frame(W.TEXT, b'{"type": "resume", "after": 0, "id": "final"}'))
    got = await _next_json(w, s, timeout)
    want = {"type": "resumed", "recovered": True, "offset": s.last, "epoch": s.epoch,
            "solicited": True, "id": "final"}
    if got != want:
        raise Mismatch(f"final resume: want {want}, got {got}")
    if sorted(s.events) != list(range(1, s.last + 1)):
        raise Mismatch(f"final resume: offsets {sorted(s.events)}, want 1..{s.last}")
    users = {e["id"]: o for o, e in s.events.items() if e.get("type") == "user"}
    if users != s.acked:
        raise Mismatch(f"user events {users} != acked {s.acked}")


async def _next_json(w: W.Wire, s: Session, timeout: float) -> dict[str, Any]:
    f = await _next(w, s, timeout)
    if f.opcode != W.TEXT:
        raise Mismatch(f"want a text frame, got {f}")
    got: dict[str, Any] = json.loads(f.payload)
    return got


async def _next(w: W.Wire, s: Session, timeout: float) -> W.Frame:
    """The next frame that is not a session log event (those are recorded in ``s``) nor a
    turn's streamed text (skipped)."""
    while True:
        f = await asyncio.wait_for(w.read(), timeout)
        if f is None:
            raise Mismatch("the edge closed the connection without a close frame")
        if f.opcode == W.TEXT:
            obj = json.loads(f.payload)
            if obj.get("type") in EVENTS and isinstance(obj.get("offset"), int):
                s.events[obj["offset"]] = obj
                s.since_answer.add(obj["offset"])
                continue
            if obj.get("type") in STREAM and "offset" not in obj:
                continue
        return f
