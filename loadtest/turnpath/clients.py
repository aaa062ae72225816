"""The bench's client sessions: one connection and one reader each; every frame counted by
type, reply text whether it comes as log ``delta`` events (before issue 13) or ``chunk`` frames."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import websockets

from agentia.settings import DEV_SECRET
from gateway.auth import mint
from loadtest.turnpath import wire
from loadtest.turnpath.wire import Closed

TEXT_FRAMES = ("delta", "chunk")  # reply text: a log event before issue 13, a frame after
ENDS = ("reply", "cancelled", "turn_error")


@dataclass(slots=True)
class Tally:
    sent: int = 0
    acked: int = 0
    acks: list[float] = field(default_factory=list)
    turns: list[float] = field(default_factory=list)
    firsts: list[float] = field(default_factory=list)
    frames: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    text_chars: int = 0
    reply_chars: int = 0
    reply_words: int = 0


class Client:
    """One session's connection: sends turns, and resolves each one's future at its end."""

    def __init__(self, ws: Any, session: str, tally: Tally) -> None:
        self.ws, self.session, self.tally = ws, session, tally
        self.sent: dict[str, float] = {}
        self.ended: dict[str, asyncio.Future[None]] = {}
        self.cid_of: dict[int, str] = {}
        self.early: set[int] = set()  # ends seen before their ack
        self.acked: set[str] = set()
        self.finished: set[str] = set()  # ended by reply, cancelled or turn_error
        self.streaming: set[str] = set()  # turns whose first text frame came
        self.n = 0

    async def send(self, text: str) -> asyncio.Future[None]:
        cid = f"{self.session}-{self.n}"
        self.n += 1
        fut = asyncio.get_running_loop().create_future()
        self.ended[cid] = fut
        self.sent[cid] = time.perf_counter()
        self.tally.sent += 1
        try:
            await self.ws.send(orjson.dumps({"type": "send", "id": cid, "text": text}).decode())
        except (websockets.ConnectionClosed, Closed):
            fut.set_result(None)  # the reader counts the close
        return fut

    def lost(self) -> int:
        """Turns acked (durably accepted) that no ending event reached."""
        return len(self.acked - self.finished)

    def _end(self, cid: str, now: float, ok: bool = True) -> None:
        fut = self.ended.get(cid)
        if fut is not None and not fut.done():
            fut.set_result(None)
            if ok:
                self.finished.add(cid)
                self.tally.turns.append(now - self.sent[cid])

    async def read(self) -> None:
        """Until the connection closes; a close by the edge is counted as an error."""
        try:
            listen = getattr(self.ws, "listen", None)
            if listen is not None:  # picows (wire.py): frames come to feed as parsed
                await listen(self.feed)
            else:
                async for raw in self.ws:
                    self.feed(raw)
        except websockets.ConnectionClosed:
            pass
        if self.ws.close_code not in (None, 1000):
            self.tally.errors[f"close_{self.ws.close_code}"] += 1
        for fut in self.ended.values():  # nothing more comes: the senders move on
            if not fut.done():
                fut.set_result(None)

    def feed(self, raw: bytes | str) -> None:
        self._frame(orjson.loads(raw), time.perf_counter())

    def _frame(self, f: dict[str, Any], now: float) -> None:
        t, kind = self.tally, str(f.get("type"))
        t.frames[kind] += 1
        if kind == "ack":
            t.acked += 1
            self.acked.add(f["id"])
            t.acks.append(now - self.sent[f["id"]])
            self.cid_of[f["offset"]] = f["id"]
            if f["offset"] in self.early:
                self._end(f["id"], now)
        elif kind in TEXT_FRAMES or kind in ENDS:
            self._turn_frame(f, kind, now)
        elif kind == "error":
            t.errors[f.get("code", "?")] += 1
            if f.get("ref") in self.ended:  # a refused send: no turn, move on
                self._end(f["ref"], now, ok=False)

    def _turn_frame(self, f: dict[str, Any], kind: str, now: float) -> None:
        t, cid = self.tally, self.cid_of.get(f.get("turn", -1))
        if kind in TEXT_FRAMES:
            t.text_chars += len(f.get("text", ""))
            if cid and cid not in self.streaming:
                self.streaming.add(cid)
                t.firsts.append(now - self.sent[cid])
            return
        if kind == "reply":
            t.reply_chars += len(f["text"])
            t.reply_words += len(f["text"].split())
        if cid is None:
            self.early.add(f["turn"])
        else:
            self._end(cid, now)


async def connect_all(port: int | list[int], n: int, tally: Tally) -> list[Client]:
    """``n`` sessions, session ``i`` on the ``i``-th port of ``port`` round the list (several
    edges, each on its own port: what a load balancer spreads)."""
    token = mint(DEV_SECRET, "bench-turnpath", 3600)
    sem = asyncio.Semaphore(50)
    ports = port if isinstance(port, list) else [port]

    async def one(i: int) -> Client:
        async with sem:
            ws, first = await wire.connect(
                f"ws://127.0.0.1:{ports[i % len(ports)]}/v1/ws?session=tp-{i}",
                {"Authorization": f"Bearer {token}"})
            welcome = orjson.loads(first)
            return Client(ws, str(welcome.get("session", f"tp-{i}")), tally)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def closed_loop(c: Client, text: str, until: float, grace: float) -> None:
    while time.perf_counter() < until:
        fut = await c.send(text)
        await asyncio.wait([fut], timeout=until + grace - time.perf_counter())
        if not fut.done():  # counted as lost if it was acked
            return


TICK_S = 0.005
"""The fixed rate's sending period: the turns due are sent together (one timer per tick, not
one sleep per turn: at 1,000 turns/s the sender's own wake-ups were a load of their own)."""


async def fixed_rate(clients: list[Client], text: str, rate: float, until: float) -> None:
    n, t0 = 0, time.perf_counter()
    while (now := time.perf_counter()) < until:
        due = int((now - t0) * rate) + 1
        while n < due:
            await clients[n % len(clients)].send(text)
            n += 1
        await asyncio.sleep(TICK_S)
