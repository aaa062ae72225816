"""Under a burst of back-to-back turns on many sessions, every acked turn gets its reply.

A regression test for a race between a worker releasing a session and a new turn arriving
for it (the turn's shard entry was acked, the turn never ran)."""

from __future__ import annotations

import asyncio

from tests.conftest import Client, Cluster


async def test_back_to_back_turns_on_many_sessions_all_complete(cluster: Cluster) -> None:
    edge = cluster.edge(AGENTIA_MAX_CONNECTIONS_PER_USER="100")
    cluster.worker("tests.agents_fixtures:fast")
    sessions, turns = 30, 8
    clients = [await Client.open(edge.port, session=f"burst-{n}") for n in range(sessions)]
    for c in clients:
        await c.recv()

    async def drive(c: Client) -> list[int]:
        acked: list[int] = []
        for t in range(turns):
            await c.send(type="send", id=f"m{t}", text=f"message {t}")
            acked.append((await c.until("ack", id=f"m{t}"))["offset"])
        replies: set[int] = {f["turn"] for f in c.frames if f["type"] == "reply"}
        async with asyncio.timeout(30):
            while not set(acked) <= replies:
                f = await c.recv(30)
                if f["type"] == "reply":
                    replies.add(f["turn"])
        return sorted(replies & set(acked))

    done = await asyncio.gather(*(drive(c) for c in clients))
    assert sum(len(d) for d in done) == sessions * turns
