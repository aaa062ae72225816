"""The attack classes of issue 10, each run by ``conns`` attacking connections until a deadline.

An attack counts the frames it got onto the wire (``ctx.frames``); the bench measures the edge
from outside (RSS, CPU, log lines) around it. Attacks that read reconnect when the edge closes
them (to the same session: reconnecting is part of what an attacker pays), and those that do
not read stop when the edge stops reading from them or resets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from gateway.auth import mint
from loadtest.attack import wire as W
from sessions.bus import Bus

_BIG_EVENT = 60_000
_EVENTS = 40


@dataclass
class Ctx:
    port: int
    secret: str
    bus: Bus
    frames: int = 0
    connects: int = 0
    closes: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    wires: list[W.Wire] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    async def connect(self, user: str, session: str | None = None) -> W.Wire | None:
        """A connection that got its ``welcome``; None (counted) when refused."""
        try:
            w = await W.Wire.connect("127.0.0.1", self.port, mint(self.secret, user, 3600),
                                     session=session)
        except W.HandshakeRefused as exc:
            self.refused[str(exc.status)] += 1
            return None
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            self.refused["reset"] += 1
            return None
        self.connects += 1
        first = await asyncio.wait_for(w.read(), 10)
        if first is None or first.opcode != W.TEXT:
            self.closes[str(first.close_code if first else "eof")] += 1
            w.abort()
            return None
        self.wires.append(w)
        return w


class Attack:
    name: ClassVar[str] = ""
    what: ClassVar[str] = ""

    async def prepare(self, ctx: Ctx, conns: int) -> None:
        """Set up what the attack needs (sessions, events) before measuring."""

    async def one(self, ctx: Ctx, i: int, deadline: float) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------- helpers


async def _flood(ctx: Ctx, w: W.Wire, chunk: bytes, n: int, deadline: float,
                 pace_s: float = 0.0) -> bool:
    """Write ``chunk`` (``n`` frames) until the deadline; False when the edge hung up."""
    while (left := deadline - time.monotonic()) > 0:
        w.write(chunk)
        try:
            await asyncio.wait_for(w.writer.drain(), left)
        except TimeoutError:
            return True  # the edge stopped reading us: back-pressure holds
        except (ConnectionError, OSError):
            ctx.closes["reset"] += 1
            return False
        ctx.frames += n
        if pace_s:
            await asyncio.sleep(pace_s)
    return True


async def _drain_answers(ctx: Ctx, w: W.Wire) -> None:
    """Read (and drop) everything the edge sends; count its close."""
    while (f := await w.read()) is not None:
        if f.opcode == W.CLOSE:
            ctx.closes[str(f.close_code)] += 1
            return
    ctx.closes["eof"] += 1


async def _reading(ctx: Ctx, user: str, session: str, chunk: bytes, n: int, deadline: float,
                   pace_s: float = 0.0) -> None:
    """Send ``chunk`` again and again while reading the answers; reconnect when closed."""
    while time.monotonic() < deadline:
        w = await ctx.connect(user, session)
        if w is None:
            await asyncio.sleep(0.1)
            continue
        reader = asyncio.create_task(_drain_answers(ctx, w))
        flood = asyncio.create_task(_flood(ctx, w, chunk, n, deadline, pace_s))
        await asyncio.wait([reader, flood], return_when=asyncio.FIRST_COMPLETED)
        flood.cancel()
        reader.cancel()
        if time.monotonic() >= deadline:
            return  # still connected: measured as held, closed by the bench
        ctx.wires.remove(w)  # the edge closed it (or reset it): reconnect
        w.abort()


def _frames(opcode: int, payload: bytes, n: int) -> bytes:
    return b"".join(W.frame(opcode, payload) for _ in range(n))


# ---------------------------------------------------------------- the attacks


class WsPingFlood(Attack):
    name, what = "ws_ping_flood", "125-byte WebSocket PINGs, pongs never read"

    async def one(self, ctx: Ctx, i: int, deadline: float) -> None:
        w = await ctx.connect(f"attacker-{i}")
        if w is not None:
            w.pause_reading()
            await _flood(ctx, w, _frames(W.PING, b"x" * 125, 64), 64, deadline)


class AppPingFlood(Attack):
    name, what = "app_ping_flood", "agentia `ping` frames (~125 bytes), pongs never read"

    async def one(self, ctx: Ctx, i: int, deadline: float) -> None:
        w = await ctx.connect(f"attacker-{i}")
        if w is not None:
            w.pause_reading()
            ping = orjson.dumps({"type": "ping", "data": "x" * 96})
            await _flood(ctx, w, _frames(W.TEXT, ping, 64), 64, deadline)


class ResumeReplay(Attack):
    name = "resume_replay"
    what = "`resume` from 0 of 40 x 60 KB events at the allowed rate, never read"

    async def prepare(self, ctx: Ctx, conns: int) -> None:
        sid = f"attack-replay-{uuid.uuid4().hex[:8]}"
        await ctx.bus.open_session(sid, "attacker")
        for n in range(_EVENTS):
            await ctx.bus.append(sid, {"type": "reply", "turn": n + 1, "text": "x" * _BIG_EVENT})
        ctx.extra["session"] = sid

    async def one(self, ctx: Ctx, i: int, deadline: float) -> None:
        w = await ctx.connect("attacker", ctx.extra["session"])
        if w is None:
            return
        w.pause_reading()
        resume = W.frame(W.TEXT, b'{"type": "resume", "after": 0}')
        # the bucket's burst (20), then one per 210 ms: never rate_limited, never a strike
        w.write(resume * 20)
        ctx.frames += 20
        await asyncio.sleep(0.21)
        await _flood(ctx, w, resume, 1, deadline, pace_s=0.21)


class DeepPing(Attack):
    name, what = "deep_ping", "`ping` whose data nests 300 deep (parses, cannot be echoed), read"

    async def one(self, ctx: Ctx, i: int, deadline: float) -> None:
        ping = b'{"type": "ping", "data": ' + b"[" * 300 + b"]" * 300 + b"}"
        await _reading(ctx, "attacker", f"attack-deep-{i}", _frames(W.TEXT, ping, 16), 16,
                       deadline)


class HugeCancel(Attack):
    name, what = "huge_cancel", "`cancel` of turn 10^15 at the allowed rate, read"

    async def one(self, ctx: Ctx, i: int, deadline: float) -> None:
        cancel = W.frame(W.TEXT, b'{"type": "cancel", "turn": 1000000000000000}')
        await _reading(ctx, "attacker", f"attack-cancel-{i}", cancel, 1, deadline,
                       pace_s=0.21)


class Oversize(Attack):
    name, what = "oversize", "one 65,537-byte message per connection, reconnecting"

    async def one(self, ctx: Ctx, i: int, deadline: float) -> None:
        big = W.frame(W.TEXT, b" " * 65_537)
        while time.monotonic() < deadline:
            w = await ctx.connect("attacker", f"attack-big-{i}")
            if w is None:
                await asyncio.sleep(0.1)
                continue
            ctx.wires.remove(w)
            w.write(big)
            ctx.frames += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_drain_answers(ctx, w), 5)
            w.abort()


class ManySessions(Attack):
    name, what = "many_sessions", "one user opens a new session per connection, then leaves"

    async def prepare(self, ctx: Ctx, conns: int) -> None:
        ctx.extra["redis_before"] = await _used_memory(ctx.bus)

    async def one(self, ctx: Ctx, i: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            w = await ctx.connect("attacker")
            if w is None:
                await asyncio.sleep(0.1)
                continue
            ctx.wires.remove(w)
            ctx.frames += 1
            w.abort()


async def _used_memory(bus: Bus) -> int:
    info = await bus.redis.info("memory")
    return int(info["used_memory"])


ATTACKS: dict[str, type[Attack]] = {a.name: a for a in (
    WsPingFlood, AppPingFlood, ResumeReplay, DeepPing, HugeCancel, Oversize, ManySessions)}
