"""An edge node, an agent worker and the bus in one event loop against the real Redis of the
test harness, with an in-memory transport: no sockets, no subprocesses. Reaches the
connection logic that otherwise only the e2e processes exercise (replays racing live events,
cancel, a slow consumer) deterministically and fast."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from agentia.codes import AgentiaError, ErrorCode
from agentia.settings import from_env
from agentia.settings_edge import EdgeSettings
from gateway.connection import Connection
from gateway.node import EdgeNode
from sessions import keys as K
from sessions.bus import Bus, frame_for
from sessions.runtime import ModelConfig, model_provider
from sessions.worker import Worker, WorkerConfig
from tests import agents_fixtures
from tests.conftest import TEST_SECRET, token


class MemoryTransport:
    """The write side of a socket, in memory. ``blocked``: the client reads nothing."""

    def __init__(self, blocked: bool = False) -> None:
        self.frames: list[dict[str, Any]] = []
        self.blocked = blocked
        self.buffer = 0
        self.closed: tuple[int, str] | None = None
        self.aborted = False
        self.arrived = asyncio.Event()

    async def send(self, frame: bytes) -> None:
        if self.blocked:
            self.buffer += len(frame)
            await asyncio.Event().wait()  # the kernel buffer never drains
        self._take(frame)

    def send_now(self, frame: bytes) -> bool:
        if self.blocked:
            return False
        self._take(frame)
        return True

    def _take(self, frame: bytes) -> None:
        self.frames.append(orjson.loads(frame))
        self.arrived.set()

    def buffered(self) -> int:
        return self.buffer

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def abort(self) -> None:
        self.aborted = True


@dataclass
class Client:
    conn: Connection
    t: MemoryTransport

    async def send(self, **frame: Any) -> None:
        await self.conn.on_frame(orjson.dumps(frame))

    async def until(self, kind: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
        seen = 0
        async with asyncio.timeout(timeout):
            while True:
                for f in self.t.frames[seen:]:
                    if f.get("type") == kind and all(f.get(k) == v for k, v in match.items()):
                        return f
                seen = len(self.t.frames)
                self.t.arrived.clear()
                await self.t.arrived.wait()

    def offsets(self) -> list[int]:
        return [f["offset"] for f in self.t.frames if f.get("type") not in
                ("welcome", "ack", "resumed", "error", "cancelling", "pong", "chunk",
                                 "partial")]


@pytest.fixture(autouse=True)
def _edge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (5_000, 10_000))
    monkeypatch.setenv("AGENTIA_DEV", "true")


@pytest.fixture
async def node(bus: Bus) -> AsyncIterator[EdgeNode]:
    settings = from_env(EdgeSettings, jwt_secret=TEST_SECRET, port=0, send_stall_s=1.0,
                        send_budget_bytes=65_536)
    n = EdgeNode(settings, bus)
    await bus.heartbeat_node(n.id)
    yield n
    for task in list(n.tasks):
        task.cancel()
    await asyncio.gather(*n.tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def running_worker(bus: Bus, agent: str = "fast") -> AsyncIterator[Worker]:
    w = Worker(bus, getattr(agents_fixtures, agent), model_provider(ModelConfig()),
               WorkerConfig(coalesce_ms=10, block_ms=100))
    task = asyncio.create_task(w.run())
    try:
        yield w
    finally:
        w.stopping.set()
        async with asyncio.timeout(15):
            await task


async def connect(node: EdgeNode, user: str = "ann", session: str | None = None,
                  blocked: bool = False) -> Client:
    conn = node.admit({"authorization": f"Bearer {token(user)}"}, "", session)
    assert isinstance(conn, Connection), conn
    t = MemoryTransport(blocked)
    conn.attach(t)
    assert await node.open(conn) is None
    return Client(conn, t)


async def test_a_turn_streams_through_edge_and_worker(node: EdgeNode, bus: Bus) -> None:
    node.spawn(node.deliver_forever())
    c = await connect(node)
    assert (await c.until("welcome"))["offset"] == 0
    async with running_worker(bus):
        await c.send(type="send", id="m1", text="hello")
        ack = await c.until("ack", id="m1")
        reply = await c.until("reply", turn=ack["offset"])
    got = c.offsets()
    assert got == list(range(1, reply["offset"] + 1))  # every event once, in order, no gap
    await c.send(type="send", id="m1", text="hello")  # the same id: a duplicate
    assert (await c.until("ack", duplicate=True))["offset"] == ack["offset"]


async def test_resume_while_a_gap_is_being_filled(node: EdgeNode, bus: Bus) -> None:
    """No delivery loop: the client sees nothing live until an event reveals a gap; the
    resume that comes meanwhile waits for that fill, then replays what it asked for."""
    c = await connect(node)
    await c.send(type="send", id="m1", text="hello")
    await c.until("ack", id="m1")
    worker = Worker(bus, agents_fixtures.fast, model_provider(ModelConfig()),
                    WorkerConfig(coalesce_ms=10, block_ms=100))
    await asyncio.wait_for(worker.run(burst=True), 15)  # returns when no turn is left
    assert worker.turns_done == 1
    sid = c.conn.state.session
    log = (await bus.replay(sid, 0, None, 500)).events
    last, event = log[-1]
    assert c.offsets() == []
    c.conn.on_live(last, frame_for(last, event))  # a gap: the fill starts in the background
    assert c.conn.filler is not None
    await c.send(type="resume", after=1, id="r1")
    resumed = await c.until("resumed", id="r1")
    assert resumed["recovered"] is True and resumed["offset"] == last
    assert c.offsets() == list(range(1, last + 1)) + list(range(2, last + 1))
    assert c.t.frames[-1] is resumed and c.conn.filler is None


async def test_cancel_a_running_turn(node: EdgeNode, bus: Bus) -> None:
    node.spawn(node.deliver_forever())
    c = await connect(node)
    async with running_worker(bus, "slow"):
        await c.send(type="send", id="m1", text="tell me a long story about the sea")
        turn = (await c.until("ack", id="m1"))["offset"]
        await c.until("chunk", turn=turn)
        await c.send(type="cancel", turn=turn, id="c1")
        assert (await c.until("cancelling", id="c1"))["turn"] == turn
        await c.until("cancelled", turn=turn)
        await c.send(type="cancel", turn=turn, id="c2")
        err = await c.until("error", ref="c2")
    assert err["code"] == "turn_not_active"
    assert not any(f.get("type") == "reply" for f in c.t.frames)


async def test_a_slow_consumer_is_closed_and_others_are_not(node: EdgeNode, bus: Bus) -> None:
    node.spawn(node.deliver_forever())
    slow = await connect(node, session="shared", blocked=True)
    fast = await connect(node, session="shared")
    text = "x" * 15_000
    for i in range(6):  # 90 KB of user events, over the 64 KiB send budget
        await fast.send(type="send", id=f"m{i}", text=text)
        await fast.until("ack", id=f"m{i}")
    await fast.until("user", id="m5")  # delivered to both connections in the same pass
    # over the budget the slow one fell behind (the log holds the rest); it takes nothing,
    # so its fill makes no progress and closes it SLOW after send_stall_s (1 s here)
    assert node.metrics["fell_behind"] == 1
    assert not slow.conn.closed and slow.conn.filler is not None
    await asyncio.wait_for(slow.conn.filler, 5)  # it ends with the SLOW close
    assert slow.conn.closed and node.metrics["slow_closes"] == 1
    await slow.conn.closer
    assert slow.t.aborted
    assert [f["id"] for f in fast.t.frames if f.get("type") == "user"] == [
        f"m{i}" for i in range(6)]
    assert not fast.conn.closed


async def test_a_paced_replay_to_a_reader_that_stalls_closes_slow(node: EdgeNode,
                                                                  bus: Bus) -> None:
    writer = await connect(node, session="s2")
    for i in range(4):  # 60 KB in the log: more than half the budget
        await writer.send(type="send", id=f"m{i}", text="y" * 15_000)
    stuck = await connect(node, session="s2", blocked=True)
    started = asyncio.get_running_loop().time()
    await stuck.send(type="resume", after=0, id="r")
    took = asyncio.get_running_loop().time() - started
    assert stuck.conn.closed and node.metrics["slow_closes"] == 1
    assert stuck.conn.closer is not None
    await stuck.conn.closer
    assert stuck.t.aborted
    assert 1.0 <= took < 5.0  # send_stall_s = 1
    assert stuck.t.closed is None  # a reset, no close frame: it could not get through
    assert not any(f.get("type") == "resumed" for f in stuck.t.frames)


async def test_the_shard_lag_is_read_once_for_sends_that_come_together(
        node: EdgeNode, bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sends that find the lag a second old while it is being read go by the last figure: one
    read of it, not one each (they each read it: 0.12 reads a turn at 200 sessions). And the
    shards sent to meanwhile are read with it, in the same round trip (session 17: a read of
    its own for each shard, once a second)."""
    reads: list[list[tuple[str, int]]] = []
    real = bus.shard_lags

    async def counted(shards: Any) -> dict[tuple[str, int], int]:
        reads.append(sorted(shards))
        return await real(shards)

    monkeypatch.setattr(bus, "shard_lags", counted)
    await asyncio.gather(*(node.check_overload("s-lag", f"r{i}") for i in range(20)))
    first = (K.DEFAULT_AGENT, K.shard_for("s-lag", bus.shards))
    assert reads == [[first]]
    other = next(s for n in range(100) if (s := f"s-other-{n}") and K.shard_for(
        s, bus.shards) != first[1])
    await node.check_overload(other, "r-other")  # a new shard: read at once
    second = (K.DEFAULT_AGENT, K.shard_for(other, bus.shards))
    assert reads == [[first], [second]]
    await node.check_overload("s-lag", "r-again")  # both sent to, both fresh: no read
    await node.check_overload(other, "r-other-again")
    for shard, (_, lag) in list(node._lag.items()):  # a second later: read again, together
        node._lag[shard] = (0.0, lag)
    monkeypatch.setattr(node.settings, "max_inbound_lag", -1)
    with pytest.raises(AgentiaError) as refused:
        await node.check_overload("s-lag", "r-late")
    assert refused.value.code is ErrorCode.OVERLOADED
    assert reads == [[first], [second], sorted([first, second])]
