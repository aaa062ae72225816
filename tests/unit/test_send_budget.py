"""The per-connection send budget and ping allowance, with a fake transport: no sockets."""

from __future__ import annotations

import asyncio
import resource
from collections import Counter
from collections.abc import Coroutine
from typing import Any, cast

import pytest

from agentia.settings import SettingsError, from_env
from agentia.settings_edge import EdgeSettings
from gateway import protocol as P
from gateway import session_protocol as S
from gateway.connection import Connection
from gateway.host import Host

BUDGET = 65_536


class FakeTransport:
    """A socket whose library buffer holds ``buf`` bytes; ``blocked``: nothing drains."""

    def __init__(self, blocked: bool = True) -> None:
        self.buf = 0
        self.blocked = blocked
        self.aborted = False
        self.release = asyncio.Event()

    async def send(self, frame: bytes) -> None:
        if self.blocked:
            await self.release.wait()
        self.buf += len(frame)

    def send_now(self, frame: bytes) -> bool:
        if self.blocked:
            return False
        self.buf += len(frame)
        return True

    def buffered(self) -> int:
        return self.buf

    async def close(self, code: int, reason: str) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True


class FakeNode:
    def __init__(self) -> None:
        self.limits = P.Limits(max_frame_bytes=65_536, max_text_chars=16_000, rate_per_s=5.0,
                               burst=20.0, send_queue=256, send_budget_bytes=BUDGET,
                               ping_rate_per_s=20.0, ping_burst=40.0, heartbeat_s=25.0,
                               idle_timeout_s=90.0)
        self.metrics: Counter[str] = Counter()
        self.rules = S.Rules(self.limits, 0.5, self.metrics)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        coro.close()  # the close itself is the transport's business, tested end to end


def _conn(transport: FakeTransport) -> tuple[Connection, FakeNode]:
    node = FakeNode()
    state = S.SessionProtocol(node.rules, "s", "u", None, 0.0)
    conn = Connection(cast(Host, node), state)
    conn.attach(cast(Any, transport))
    return conn, node


async def test_bytes_over_the_budget_close_slow() -> None:
    t = FakeTransport()
    conn, node = _conn(t)
    frame = b"x" * 10_000
    for _ in range(6):
        conn.push(frame)
    assert not conn.closed and conn.queued == 60_000
    conn.push(frame)  # 70,000 > 65,536
    assert conn.closed and node.metrics["slow_closes"] == 1
    assert conn.outbox is None and conn.queued == 0


async def test_the_library_buffer_counts_too() -> None:
    t = FakeTransport(blocked=False)
    conn, node = _conn(t)
    t.buf = BUDGET - 100
    conn.push(b"y" * 200)
    assert conn.closed and node.metrics["slow_closes"] == 1


async def test_one_frame_larger_than_the_budget_goes_out_alone() -> None:
    t = FakeTransport(blocked=False)
    conn, _ = _conn(t)
    conn.push(b"z" * (BUDGET * 2))
    assert not conn.closed and t.buf == BUDGET * 2
    conn.push(b"z")  # now something is waiting: over the budget
    assert conn.closed


async def test_pongs_written_by_the_library_are_checked() -> None:
    t = FakeTransport(blocked=False)
    conn, node = _conn(t)
    t.buf = BUDGET
    conn.check_budget()
    assert not conn.closed
    t.buf += 1
    conn.check_budget()
    assert conn.closed and node.metrics["slow_closes"] == 1 and not t.aborted
    conn.check_budget()  # still over while closing: reset at once
    assert t.aborted


async def test_ws_pings_over_the_allowance_close_flood() -> None:
    conn, node = _conn(FakeTransport(blocked=False))
    assert all(conn.on_ws_ping() for _ in range(40))
    assert not conn.on_ws_ping()
    assert conn.closed and node.metrics["flood_closes"] == 1
    assert not conn.on_ws_ping()


async def test_app_pings_share_the_allowance() -> None:
    t = FakeTransport(blocked=False)
    conn, node = _conn(t)
    for _ in range(30):
        assert conn.on_ws_ping()
    for _ in range(10):
        await conn.on_frame(b'{"type":"ping"}')
    assert node.metrics["error:rate_limited"] == 0
    await conn.on_frame(b'{"type":"ping"}')
    assert node.metrics["error:rate_limited"] == 1 and not conn.closed


async def test_internal_errors_are_strikes() -> None:
    conn, node = _conn(FakeTransport(blocked=False))
    conn.state.bucket = P.TokenBucket(1e6, 1e6)
    # the fake node has no bus: every cancel fails unexpectedly (AttributeError)
    for _ in range(P.MAX_STRIKES + 1):
        await conn.on_frame(b'{"type":"cancel"}')
    assert node.metrics["error:internal"] == P.MAX_STRIKES + 1
    assert conn.closed and node.metrics["flood_closes"] == 1


async def test_a_paced_replay_that_makes_no_progress_closes_slow() -> None:
    t = FakeTransport()
    conn, node = _conn(t)
    frame = b"r" * 20_000
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(5):
        for _ in range(10):
            await conn.push_paced(frame)
            if conn.closed:
                break
    assert conn.closed and node.metrics["slow_closes"] == 1
    assert 0.5 <= loop.time() - start < 2.0  # send_stall_s = 0.5, polled every 0.25 s


async def test_a_paced_replay_goes_on_as_the_client_reads() -> None:
    t = FakeTransport()
    conn, _ = _conn(t)
    frame = b"r" * 20_000

    async def reader() -> None:
        while True:
            await asyncio.sleep(0.05)
            t.release.set()  # the kernel takes everything written so far
            t.buf = 0
            conn.wake()  # as picows' resume_writing does

    task = asyncio.create_task(reader())
    try:
        async with asyncio.timeout(10):
            for _ in range(40):  # 800 KB: twelve budgets' worth
                await conn.push_paced(frame)
                assert conn.pending() <= BUDGET
    finally:
        task.cancel()
    assert not conn.closed


@pytest.mark.parametrize("queued", [True, False])
async def test_stalled(queued: bool) -> None:
    conn, _ = _conn(FakeTransport())
    if queued:
        conn.push(b"q")
    conn.progress_at = 100.0
    assert conn.stalled(100.4) is None
    assert (conn.stalled(100.6) is not None) is queued


@pytest.fixture(autouse=True)
def _fd_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """EdgeSettings checks the fd limit: pretend 5,000, whatever the machine's; dev mode so
    the default secret is accepted (the secret rules are tested in test_settings.py)."""
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (5_000, 10_000))
    monkeypatch.setenv("AGENTIA_DEV", "true")


@pytest.mark.parametrize(("var", "value"), [
    ("AGENTIA_SEND_BUDGET_BYTES", "65535"), ("AGENTIA_SEND_STALL_S", "0.1"),
    ("AGENTIA_PING_RATE_PER_S", "0"), ("AGENTIA_PING_BURST", "0.5"),
])
def test_settings_refuse_unsafe_values(monkeypatch: pytest.MonkeyPatch, var: str,
                                       value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=var):
        from_env(EdgeSettings)


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SEND_BUDGET_BYTES", "SEND_STALL_S", "PING_RATE_PER_S", "PING_BURST"):
        monkeypatch.delenv(f"AGENTIA_{var}", raising=False)
    s = from_env(EdgeSettings)
    assert (s.send_budget_bytes, s.send_stall_s, s.ping_rate_per_s, s.ping_burst) == (
        262_144, 10.0, 20.0, 40.0)


async def test_a_live_event_over_the_budget_falls_behind_instead_of_closing() -> None:
    """A burst of log events to a client that has not read yet (one read of the node's stream,
    one pass of the loop): what fits the budget is queued, the rest is left to the log (a
    paced fill), never a SLOW close, and what is queued never exceeds the budget."""
    t = FakeTransport()  # takes nothing
    conn, node = _conn(t)
    conn.state.on_opened(b"{}", "e1", 0)
    frame = b"x" * 10_000
    for offset in range(1, 41):  # 400,000 bytes: six budgets
        conn.on_live(offset, frame)
        assert conn.pending() <= BUDGET
    assert not conn.closed and node.metrics["slow_closes"] == 0
    # five fit under the budget less the control frames' eighth
    assert conn.queued == 50_000 and node.metrics["fell_behind"] == 1
    cur = conn.state.cursor
    assert cur.sent == 5 and cur.seen == 40 and cur.catching_up  # the log has 6 on


async def test_a_control_frame_over_the_budget_still_closes_slow() -> None:
    t = FakeTransport()
    conn, node = _conn(t)
    conn.state.on_opened(b"{}", "e1", 0)
    for offset in range(1, 7):
        conn.on_live(offset, b"x" * 10_000)
    assert conn.queued == 50_000  # the sixth fell behind: the last eighth is kept
    conn.push(b"a" * 10_000)  # an ack or a pong fits there
    assert not conn.closed
    conn.push(b"y" * 10_000)  # e.g. a pong or an error: no log to fall back on
    assert conn.closed and node.metrics["slow_closes"] == 1
