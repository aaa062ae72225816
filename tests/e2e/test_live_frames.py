"""Off-log frames (docs/protocol.md, interim ``transcript``) against real processes: Redis and
two edges, on both transports. A frame sent for a session reaches its clients on every edge,
before the final transcript appended after it; it is not in the log, a resuming client does not
get it, and an oversized one is not sent."""

from __future__ import annotations

import asyncio

import orjson

from sessions import events as E
from sessions.bus import Bus
from sessions.delivery_redis import FRAME_MAX
from tests.conftest import Client, Cluster
from tests.e2e.test_backend_api import opened


async def types_until(c: Client, kind: str, timeout: float = 10) -> list[dict[str, object]]:
    """Frames up to and including the first of ``kind``."""
    got = []
    async with asyncio.timeout(timeout):
        while True:
            f = await c.recv()
            got.append(f)
            if f["type"] == kind and f.get("final", True):
                return got


async def test_interims_reach_live_clients_on_every_edge_and_never_the_log(
        cluster: Cluster, bus: Bus) -> None:
    e1, e2 = cluster.edge(), cluster.edge()
    sid = "live-frames-1"
    a, b = await opened(e1.port, "lia", sid), await opened(e2.port, "lia", sid)
    try:
        for n, text in enumerate(["what", "what time", "what time is"], 1):
            frame = orjson.dumps(E.interim_transcript(text, "u1"))
            assert await bus.stream_frame(sid, frame) is True, n
        final = await bus.append(sid, E.transcript("what time is it", True, "user"))
        for c in (a, b):
            got = await types_until(c, "transcript")
            interims = [f for f in got if f["type"] == "transcript" and not f["final"]]
            assert [f["text"] for f in interims] == ["what", "what time", "what time is"]
            assert all(f["utterance"] == "u1" and "offset" not in f and f["role"] == "user"
                       and f["source"] == "voice" for f in interims), interims
            assert got[-1]["offset"] == final and got[-1]["final"] is True

        logged = [orjson.loads(e) for _o, e in (await bus.replay(sid, 0, None)).events]
        said = [e for e in logged if e["type"] == "transcript"]
        assert [e["final"] for e in said] == [True], said

        # a resuming client gets the final from the log, never an interim
        c = await opened(e1.port, "lia", sid)
        try:
            await c.send(type="resume", after=0, id="r1")
            got = await types_until(c, "resumed")
            assert [f["type"] for f in got if f["type"] == "transcript"] == ["transcript"]
            assert all(f.get("final", True) for f in got), got
            # too big: not sent (a later frame is, and comes first)
            assert await bus.stream_frame(sid, b"x" * (FRAME_MAX + 1)) is False
            ok = orjson.dumps(E.interim_transcript("next", "u2"))
            assert await bus.stream_frame(sid, ok) is True
            f = await c.recv()
            assert (f["type"], f["text"], f["utterance"]) == ("transcript", "next", "u2")
        finally:
            await c.close()
    finally:
        await a.close()
        await b.close()
