"""Every bad input gets its documented error or close code, and the edge stays healthy."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sessions.bus import Bus
from tests.conftest import Client, Cluster, Proc, token
from tests.e2e.stalled import assert_reset, edge_report, slow_closes, stalled_client


async def _healthy(edge: Proc) -> None:
    """A fresh client still gets a welcome and a pong from the same edge process."""
    c = await Client.open(edge.port, user="healthcheck")
    assert (await c.recv())["type"] == "welcome"
    await c.send(type="ping", data=7)
    assert await c.until("pong") == {"type": "pong", "data": 7}
    await c.close()


async def _status(port: int, path: str = "/v1/ws", headers: dict[str, str] | None = None,
                  subprotocols: list[str] | None = None) -> int:
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(f"ws://127.0.0.1:{port}{path}", additional_headers=headers,
                                 subprotocols=subprotocols)  # type: ignore[arg-type]
    return info.value.response.status_code


@pytest.fixture
def edge(cluster: Cluster) -> Proc:
    return cluster.edge()


async def test_bad_json_and_unknown_frames_get_errors(edge: Proc) -> None:
    c = await Client.open(edge.port)
    await c.recv()
    await c.ws.send("{not json")
    assert (await c.recv())["code"] == "bad_json"
    await c.send(type="teleport", id="t1")
    err = await c.recv()
    assert err["code"] == "bad_frame" and err["ref"] == "t1" and err["retryable"] is False
    await c.send(type="send", id="x")
    assert (await c.recv())["code"] == "bad_frame"
    await c.ws.send(b"\x00\x01binary")
    assert (await c.recv())["code"] == "bad_json"
    await c.send(type="ping", data="still here")
    assert (await c.recv())["type"] == "pong"
    await _healthy(edge)


async def test_oversize_frame_is_closed_with_1009(edge: Proc) -> None:
    c = await Client.open(edge.port)
    await c.recv()
    await c.ws.send("x" * (64 * 1024 + 1))
    with pytest.raises(ConnectionClosed) as info:
        await c.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    await _healthy(edge)


async def test_handshake_refusals(edge: Proc, bus: Bus) -> None:
    assert await _status(edge.port) == 401  # no token
    assert await _status(edge.port, headers={"Authorization": "Bearer nonsense"}) == 401
    expired = token("alice", ttl=-60)
    assert await _status(edge.port, headers={"Authorization": f"Bearer {expired}"}) == 401
    wrong = token("alice", secret="another-secret-that-is-long-enough-for-hs256")
    assert await _status(edge.port, headers={"Authorization": f"Bearer {wrong}"}) == 401
    good = {"Authorization": f"Bearer {token('alice')}"}
    assert await _status(edge.port, "/elsewhere", headers=good) == 404
    assert await _status(edge.port, "/v1/ws?session=bad%20id", headers=good) == 400
    assert await _status(edge.port, "/v1/ws?session=s1%0A", headers=good) == 400
    await bus.open_session("bobs", "bob")
    # another user's session: refused after the upgrade, so browsers can read why
    ws = await websockets.connect(f"ws://127.0.0.1:{edge.port}/v1/ws?session=bobs",
                                  additional_headers=good)
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4501
    assert info.value.rcvd.reason == "this session belongs to another user"
    await _healthy(edge)


async def test_token_in_subprotocol_and_query(edge: Proc) -> None:
    ws = await websockets.connect(f"ws://127.0.0.1:{edge.port}/v1/ws",
                                  subprotocols=["agentia.v1", f"bearer.{token('carol')}"])  # type: ignore[list-item]
    assert ws.subprotocol == "agentia.v1"
    assert orjson.loads(await ws.recv())["type"] == "welcome"
    await ws.close()
    ws = await websockets.connect(f"ws://127.0.0.1:{edge.port}/v1/ws?token={token('carol')}")
    assert orjson.loads(await ws.recv())["type"] == "welcome"
    await ws.close()


async def test_rate_flood_gets_rate_limited_then_closed(edge: Proc) -> None:
    c = await Client.open(edge.port)
    await c.recv()
    start = time.monotonic()
    for n in range(200):
        try:
            await c.send(type="send", id=f"m{n}", text="flood")
        except ConnectionClosed:
            break
    codes: list[str] = []
    with pytest.raises(ConnectionClosed) as info:
        while True:
            f = await c.recv()
            codes.append(f.get("code") or f["type"])
    took = time.monotonic() - start
    assert info.value.rcvd is not None and info.value.rcvd.code == 4002
    # the burst (20), and the tokens refilled (5/s, the default) while the edge handled the
    # flood: one frame at a time, each accepted send a Redis call, so ~0.2 s on a quiet box
    # (22 at most, the bound before session 14) and longer on a loaded one (23 at load 11)
    assert 20 <= codes.count("ack") <= 22 + int(5 * took), (codes.count("ack"), took)
    limited = [f for f in c.frames if f.get("code") == "rate_limited"]
    assert limited and all(f["retryable"] and f["retry_after_ms"] > 0 for f in limited)
    await _healthy(edge)


async def test_slow_reader_is_closed_and_others_are_unaffected(cluster: Cluster,
                                                               bus: Bus) -> None:
    edge = cluster.edge(AGENTIA_SEND_QUEUE="32", AGENTIA_SEND_STALL_S="2")
    fast = await Client.open(edge.port, session="slowpoke")
    await fast.recv()
    slow = await stalled_client(edge.port, "slowpoke")
    # the slow client never reads; the fast one reads everything, unpaced: the producer may
    # run far ahead of it (before session 13 that closed the fast one SLOW in a quarter of
    # the runs, half with the edge's reads ahead: what came in one read of the edge's stream
    # counted against its send budget at once; now what does not fit is filled from the log)
    blob = "y" * 16_000
    n = 600

    async def produce() -> None:
        for i in range(n):
            await bus.append("slowpoke", {"type": "delta", "turn": 1, "text": blob, "i": i})

    got: list[int] = []

    async def consume() -> None:
        while len(got) < n:
            f = await fast.recv(20)
            if f["type"] == "delta":
                got.append(f["i"])

    # a failure names its side (the reader, the producer or the edge) in its one line: CI's
    # only failure in session 13 left no traceback, and its edge's log no clue. Session 14 saw
    # it again once in ~225 runs under load (picows, the same edge log as CI's: the test over
    # 0.3-0.5 s after the edge started, one connection left): the fast reader's own websockets
    # client failed the connection, "sent 1002 (protocol error) invalid opcode", after 97 of
    # 600 events, where the frames' length changes (offsets 99 -> 100): the bytes on the wire
    # were not whole frames in order. Not a SLOW close (0 counted). The cause, found and fixed
    # in session 14: picows's send of a frame over 8192 bytes left uvloop a view of its header
    # buffer, rewritten by its next send (gateway/corked.py ``send_one``; reproduced every time
    # by tests/e2e/test_long_frames.py).
    try:
        await asyncio.gather(produce(), consume())
    except Exception as exc:  # reported, with the edge's view, as the failure
        pytest.fail(f"after {len(got)} of {n} events: {exc!r}; {edge_report(edge)}")
    assert got == list(range(n)), edge_report(edge)
    closes = await slow_closes(edge)
    assert closes == 1, f"{closes} SLOW closes (the slow one only): {edge_report(edge)}"
    await assert_reset(slow, edge)
    await _healthy(edge)


async def test_capacity_limits_refuse_cleanly(cluster: Cluster) -> None:
    edge = cluster.edge(AGENTIA_MAX_CONNECTIONS="3", AGENTIA_MAX_CONNECTIONS_PER_USER="2")
    a1 = await Client.open(edge.port, user="ann")
    a2 = await Client.open(edge.port, user="ann")
    headers = {"Authorization": f"Bearer {token('ann')}"}
    assert await _status(edge.port, headers=headers) == 429  # per user
    b1 = await Client.open(edge.port, user="ben")
    headers = {"Authorization": f"Bearer {token('cat')}"}
    assert await _status(edge.port, headers=headers) == 503  # per process
    await a1.close()
    await asyncio.sleep(0.2)
    c1 = await Client.open(edge.port, user="cat")  # a freed slot is usable again
    assert (await c1.recv())["type"] == "welcome"
    for c in (a2, b1, c1):
        await c.close()


async def test_sockets_beyond_the_hard_cap_get_a_raw_503(cluster: Cluster) -> None:
    """Sockets that never finish a handshake still hold fds: past the hard cap (connections
    + 500) the edge answers 503 before reading anything, without a traceback per socket."""
    edge = cluster.edge(AGENTIA_MAX_CONNECTIONS="10")
    silent = []
    for _ in range(511):  # the cap counts sockets mid-handshake
        r, w = await asyncio.open_connection("127.0.0.1", edge.port)
        silent.append(w)
    await asyncio.sleep(0.5)
    r, w = await asyncio.open_connection("127.0.0.1", edge.port)
    head = await asyncio.wait_for(r.read(64), 5)
    assert head.startswith(b"HTTP/1.1 503")
    for s in [*silent, w]:
        s.close()
    await asyncio.sleep(0.5)
    await _healthy(edge)
    # and no traceback per socket: the cluster fixture checks every edge's log at teardown


async def test_lost_session_state_closes_with_4004(cluster: Cluster, bus: Bus) -> None:
    edge = cluster.edge()
    c = await Client.open(edge.port, session="gone")
    await c.recv()
    await bus.redis.delete(bus.keys.meta("gone"))  # as if Redis lost it
    await c.send(type="send", id="x", text="hello?")
    err = await c.until("error")
    assert err["code"] == "session_lost" and err["ref"] == "x" and err["retryable"] is False
    with pytest.raises(ConnectionClosed) as info:
        await c.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 4004
    again = await Client.open(edge.port, session="gone")  # a reconnect reopens it
    assert (await again.recv())["offset"] == 0


async def test_a_client_that_waits_as_told_is_never_closed(cluster: Cluster) -> None:
    edge = cluster.edge(AGENTIA_RATE_PER_S="20", AGENTIA_BURST="1")
    c = await Client.open(edge.port)
    await c.recv()
    acked = 0
    for n in range(40):
        while True:
            await c.send(type="resume", after=0, id=f"r{n}")
            f = await c.recv()
            while f["type"] not in ("resumed", "error"):
                f = await c.recv()
            if f["type"] == "resumed":
                assert f["id"] == f"r{n}" and f["solicited"] is True
                acked += 1
                break
            assert f["code"] == "rate_limited" and f["ref"] == f"r{n}"
            await asyncio.sleep(f["retry_after_ms"] / 1000)
    assert acked == 40
    await c.send(type="ping")
    assert (await c.until("pong"))["type"] == "pong"


async def test_a_silent_socket_is_dropped_at_the_handshake_timeout(cluster: Cluster) -> None:
    edge = cluster.edge(AGENTIA_HANDSHAKE_TIMEOUT_S="1")
    r, w = await asyncio.open_connection("127.0.0.1", edge.port)
    w.write(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n")  # never finishes the request
    async with asyncio.timeout(5):
        assert await r.read() == b""  # closed by the edge, without a response
    w.close()
    await _healthy(edge)
