"""The pieces of the edge node that stand alone, without Redis or sockets: the local registry
(gateway/registry.py), the close a failed open gets (gateway/opener.py) and the batched
session lists (gateway/session_lists.py)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import pytest

from agentia.codes import BusUnavailable, CloseCode
from gateway.connection import Connection
from gateway.opener import refusal
from gateway.registry import LocalSessions
from gateway.session_lists import MAX_KEPT, SessionLists
from sessions.backend_redis import PresenceWriter
from sessions.bus import Bus
from sessions.errors import AgentMismatch, Forbidden, UnknownAgent
from sessions.opening import Refused


@dataclass(eq=False)
class _State:
    session: str
    user: str


@dataclass(eq=False)
class _Conn:
    state: _State


def conn(session: str, user: str) -> Connection:
    return cast(Connection, _Conn(_State(session, user)))


def test_the_registry_counts_per_session_and_user_and_tells_the_last_one() -> None:
    reg = LocalSessions()
    a, b, c = conn("s1", "u1"), conn("s1", "u2"), conn("s2", "u1")
    for x in (a, b, c):
        reg.add(x)
    assert reg.count == 3 and reg.per_user == Counter({"u1": 2, "u2": 1})
    assert reg.holds(a) and not reg.holds(conn("s1", "u1"))
    assert reg.remove(a) is False  # b is still in s1
    assert reg.remove(a) is False and reg.count == 2  # removed once only
    assert reg.remove(b) is True and "s1" not in reg.by_session
    assert reg.per_user == Counter({"u1": 1}) and not reg.emptied.is_set()
    assert reg.remove(c) is True and reg.count == 0 and reg.emptied.is_set()
    assert not reg.per_user and not reg.by_session


@pytest.mark.parametrize(("exc", "code", "tally"), [
    (Refused(CloseCode.TOO_MANY_SESSIONS, "too many sessions", "refused_sessions"),
     CloseCode.TOO_MANY_SESSIONS, "refused_sessions"),
    (Forbidden(), CloseCode.FORBIDDEN, "handshake_forbidden"),
    (UnknownAgent("nope"), CloseCode.UNKNOWN_AGENT, "refused_unknown_agent"),
    (AgentMismatch("triage"), CloseCode.AGENT_MISMATCH, "refused_agent_mismatch"),
    (BusUnavailable(), CloseCode.TRY_AGAIN_LATER, "refused_redis_down"),
])
def test_a_failed_open_gets_its_close_and_is_counted(exc: Exception, code: CloseCode,
                                                      tally: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    metrics: Counter[str] = Counter()
    with caplog.at_level(logging.ERROR, "agentia.edge"):
        got, reason = refusal(exc, "s1", metrics)
    assert got == code and reason and metrics == Counter({tally: 1})
    assert not caplog.records  # expected refusals are not logged


def test_an_unexpected_failure_is_logged_and_told_as_an_outage(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics: Counter[str] = Counter()
    with caplog.at_level(logging.ERROR, "agentia.edge"):
        got = refusal(KeyError("bug"), "s1", metrics)
    assert got[0] == CloseCode.TRY_AGAIN_LATER and metrics["refused_redis_down"] == 1
    assert [r.message for r in caplog.records] == ["opening session s1 failed"]


@dataclass
class _FakeBus:
    fail: int = 0
    """Calls that raise BusUnavailable before one succeeds."""
    written: list[dict[tuple[str, str], float]] = field(default_factory=list)
    calls: int = 0
    called: asyncio.Event = field(default_factory=asyncio.Event)
    meanwhile: Callable[[], None] | None = None
    """Runs during each call (opens that arrive while a batch is out)."""

    async def touch_user_sessions(self, seen: dict[tuple[str, str], float]) -> None:
        self.calls += 1
        self.called.set()
        if self.meanwhile is not None:
            self.meanwhile()
        if self.fail:
            self.fail -= 1
            raise BusUnavailable()
        self.written.append(dict(seen))


class _FakePresence:
    def __init__(self) -> None:
        self.flushes = 0

    async def flush(self) -> None:
        self.flushes += 1
        raise BusUnavailable()  # an outage: not logged, kept by the writer itself


def lists(bus: _FakeBus) -> tuple[SessionLists, _FakePresence]:
    presence = _FakePresence()
    return SessionLists(cast(Bus, bus), cast(PresenceWriter, presence)), presence


async def flush_twice(sl: SessionLists, bus: _FakeBus) -> None:
    """Run the flush loop until the bus was called twice (each wait bounded)."""
    task = asyncio.create_task(sl.flush_forever(every_s=0))
    try:
        while bus.calls < 2:
            bus.called.clear()
            await asyncio.wait_for(bus.called.wait(), 5)
    finally:
        task.cancel()


async def test_a_failed_batch_is_kept_for_the_next_flush() -> None:
    bus = _FakeBus(fail=1)
    sl, presence = lists(bus)
    sl.opened("u1", "s1", 1.0)

    def arrival() -> None:  # an open while the first (failing) batch is out
        if bus.calls == 1:
            sl.opened("u2", "s2", 2.0)

    bus.meanwhile = arrival
    await flush_twice(sl, bus)
    assert bus.written == [{("u1", "s1"): 1.0, ("u2", "s2"): 2.0}]
    assert not sl.seen and presence.flushes >= 2


async def test_a_failed_batch_is_dropped_once_too_much_waits() -> None:
    bus = _FakeBus(fail=1)
    sl, _ = lists(bus)
    sl.opened("early", "s", 1.0)

    def arrivals() -> None:  # MAX_KEPT opens came while the first batch was out
        if bus.calls == 1:
            sl.seen.update({("u", str(i)): 2.0 for i in range(MAX_KEPT)})

    bus.meanwhile = arrivals
    await flush_twice(sl, bus)
    assert len(bus.written[0]) == MAX_KEPT and ("early", "s") not in bus.written[0]


async def test_the_last_flush_raises_an_outage_to_the_drain() -> None:
    bus = _FakeBus(fail=1)
    sl, _ = lists(bus)
    sl.opened("u1", "s1", 1.0)
    with pytest.raises(BusUnavailable):
        await sl.flush_last()
    await sl.flush_last()
    assert bus.written == [{("u1", "s1"): 1.0}]

