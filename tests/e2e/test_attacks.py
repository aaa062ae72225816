"""Attacks on a real edge, on both transports: each is answered with its documented error or
close code, within bounded memory and log lines, and never a traceback (the ``cluster``
fixture checks the edge's log for tracebacks at teardown).

A raw client (tests/rawws.py) sends what a library would not: control frames at any rate, and
it never reads, so the edge's buffers fill as they would behind an attacker's socket.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from gateway.protocol import MAX_DEPTH, MAX_NUMBER, MAX_PING_BYTES
from sessions.bus import Bus
from tests.conftest import Client, Cluster, Proc, token
from tests.rawws import PING, TEXT, PeakRSS, RawWS, frame

MIB = 1024


@pytest.fixture
def edge(cluster: Cluster) -> Proc:
    return cluster.edge(AGENTIA_SEND_STALL_S="2")


async def _healthy(edge: Proc) -> None:
    c = await Client.open(edge.port, user="healthcheck")
    assert (await c.recv())["type"] == "welcome"
    await c.send(type="ping", data=7)
    assert await c.until("pong") == {"type": "pong", "data": 7}
    await c.close()


def _raw(edge: Proc, user: str = "mallory", session: str | None = None) -> RawWS:
    ws = RawWS(edge.port, token(user), session)
    assert ws.read_json()["type"] == "welcome"
    return ws


def _log_lines(edge: Proc) -> list[str]:
    edge.log.flush()
    return Path(edge.log.name).read_text().splitlines()


async def test_ws_ping_flood_not_read_is_closed_with_bounded_memory(edge: Proc) -> None:
    """At f24036b: ~150 MiB of PINGs grew the edge by 260 MiB (pongs written, never read)."""
    ws = _raw(edge)
    pings = frame(PING, b"p" * 125) * 512
    with PeakRSS(edge.proc.pid) as rss:
        dropped, sent = ws.flood(pings, 150 * MIB * 1024, 20.0)
    ws.close()
    print(f"PING flood: edge RSS +{rss.growth} KiB after {sent} bytes")
    assert dropped, f"still open after {sent} bytes of PINGs"
    assert rss.growth < 16 * MIB, f"edge grew {rss.growth} KiB"
    await _healthy(edge)


async def test_ws_pings_over_the_allowance_close_4002(edge: Proc) -> None:
    ws = _raw(edge)
    for _ in range(60):  # burst 40: the 41st closes
        ws.send(PING, b"x")
    op, code = 0, 0
    while True:  # pongs first (this client reads), then the close frame
        op, payload = ws.read_frame()
        if op == 0x8:
            code = int.from_bytes(payload[:2], "big")
            break
    assert code == 4002
    ws.close()
    await _healthy(edge)


@pytest.mark.parametrize("size", [MAX_PING_BYTES - 40, 60_000])
async def test_app_ping_flood_not_read_is_closed_with_bounded_memory(edge: Proc,
                                                                      size: int) -> None:
    """At f24036b: pongs to large pings filled 256-frame queues (~15 MiB per connection)."""
    conns = [_raw(edge) for _ in range(4)]
    big = frame(TEXT, orjson.dumps({"type": "ping", "data": "z" * size})) * 16
    with PeakRSS(edge.proc.pid) as rss, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda ws: ws.flood(big, 200 * MIB * 1024, 20.0), conns))
    for ws in conns:
        ws.close()
    print(f"ping flood ({size} B): edge RSS +{rss.growth} KiB after {results}")
    assert all(dropped for dropped, _ in results), results
    assert rss.growth < 16 * MIB, f"edge grew {rss.growth} KiB"
    await _healthy(edge)


async def test_resume_of_large_events_not_read_is_closed_slow(edge: Proc, bus: Bus) -> None:
    """At f24036b: a 60-byte resume made the edge hold ~6 MiB per connection, forever."""
    sid = "bigevents"
    await bus.open_session(sid, "mallory")
    blob = "y" * 60_000
    for i in range(100):
        await bus.append(sid, {"type": "delta", "turn": 1, "text": blob, "i": i})
    conns = [_raw(edge, session=sid) for _ in range(10)]
    with PeakRSS(edge.proc.pid) as rss:
        for ws in conns:
            ws.send_json(type="resume", after=0, id="r")
        await asyncio.sleep(5)  # the stall bound is 2 s in this test (AGENTIA_SEND_STALL_S)
    print(f"resume of 100 x 60 KB, 10 connections: edge RSS +{rss.growth} KiB")
    codes = [ws.close_code(10) for ws in conns]
    for ws in conns:
        ws.close()
    assert codes == [1006] * 10  # SLOW resets the socket: no close frame can get through
    assert rss.growth < 24 * MIB, f"edge grew {rss.growth} KiB for 10 connections"
    # a client that reads gets the whole replay, paced by its reading
    c = await Client.open(edge.port, user="mallory", session=sid)
    await c.recv()
    await c.send(type="resume", after=0, id="r2")
    got = [f["i"] for f in [await c.recv(20) for _ in range(100)]]
    assert got == list(range(100))
    assert (await c.recv())["type"] == "resumed"
    await c.close()


async def test_deep_or_large_ping_is_bad_frame_without_traceback(edge: Proc) -> None:
    before = len(_log_lines(edge))
    c = await Client.open(edge.port)
    await c.recv()
    ok = orjson.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    await c.send(type="ping", data=ok)
    assert (await c.recv()) == {"type": "pong", "data": ok}
    for depth in (MAX_DEPTH + 1, 300, 1000):
        await c.ws.send('{"type":"ping","data":' + "[" * depth + "]" * depth + "}")
        err = await c.recv()
        assert err["code"] == "bad_frame" and "nest" in err["message"], err
    await c.send(type="ping", data="z" * MAX_PING_BYTES)
    err = await c.recv()
    assert err["code"] == "bad_frame" and str(MAX_PING_BYTES) in err["message"]
    # more than MAX_STRIKES of them: closed 4002, and not one log line per frame
    deep = '{"type":"ping","data":' + "[" * 300 + "]" * 300 + "}"
    closed = False
    for _ in range(40):
        try:
            await c.ws.send(deep)
        except Exception:
            closed = True
            break
    codes = []
    try:
        while True:
            codes.append((await c.recv())["code"])
    except Exception as exc:
        closed = closed or getattr(getattr(exc, "rcvd", None), "code", None) == 4002
    assert closed and set(codes) == {"bad_frame"}
    assert len(_log_lines(edge)) - before <= 2
    await _healthy(edge)


async def test_huge_numbers_and_long_fields_are_bad_frames(edge: Proc) -> None:
    c = await Client.open(edge.port)
    await c.recv()
    for frame_ in ({"type": "cancel", "turn": 10**15, "id": "c1"},
                   {"type": "cancel", "turn": MAX_NUMBER + 1, "id": "c2"},
                   {"type": "resume", "after": 10**15, "id": "r1"},
                   {"type": "resume", "after": 0, "epoch": "e" * 65, "id": "r2"}):
        await c.send(**frame_)
        err = await c.recv()
        assert err["code"] == "bad_frame" and err["ref"] == frame_["id"], err
    # the bounds themselves reach Redis and are answered normally
    await c.send(type="cancel", turn=MAX_NUMBER, id="c3")
    assert (await c.recv())["code"] == "turn_not_active"
    await c.send(type="resume", after=MAX_NUMBER, id="r3")
    assert await c.until("resumed", id="r3")
    await c.send(type="t" * 10_000, id="u1")
    err = await c.recv()
    assert err["code"] == "bad_frame" and len(err["message"]) < 120
    await c.ws.send('{"type":' + "[" * 1000 + "]" * 1000 + ',"id":"u2"}')  # repr() overflowed
    err = await c.recv()
    assert err["code"] == "bad_frame" and err["ref"] == "u2", err
    await c.close()
    await _healthy(edge)


async def test_oversize_frames_log_no_errors(edge: Proc) -> None:
    before = len(_log_lines(edge))
    for _ in range(10):
        ws = _raw(edge)
        ws.send(TEXT, b"x" * (64 * 1024 + 1))
        assert ws.close_code(10) in (1009, 1006)
        ws.close()
    new = _log_lines(edge)[before:]
    assert not [line for line in new if " ERROR " in line], new
    assert len(new) <= 2, new
    await _healthy(edge)
