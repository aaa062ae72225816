"""What asynchronous replication can lose in a Redis Cluster failover, with and without
``AGENTIA_REDIS_WAIT_REPLICAS``: clients submit turns as fast as they can to the sessions of
one master; its replica is paused (SIGSTOP, as a slow or partitioned replica would be) so that
the master's replication output piles up; the master is killed and the replica resumed and
promoted; every acked turn is then looked for on the new master.

    .venv/bin/python -m loadtest.bench_failover_loss [--runs 3]

A SIGKILL alone loses nothing on loopback (the replication stream is already in the kernel's
socket buffers); the pause is what makes the replica lag as it would across a network.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agentia.codes import AgentiaError, BusUnavailable
from launch.redis_server import RedisClusterServer
from sessions.bus import Bus, Replay, connect


@dataclass(frozen=True, slots=True)
class Loss:
    acked: int
    missing: int
    """Acked turns whose offset is absent from the new master's log (a lower bound: an offset
    reused by a later turn counts as present)."""


async def _submit_forever(bus: Bus, sid: str, acked: set[int], stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        try:
            sub = await bus.submit(sid, f"c{i}", "x" * 2000, user="alice")
            acked.add(sub.offset)
            i += 1
            if i % 90 == 0:  # a session holds at most 100 pending turns
                await bus.append(sid, {"type": "reply"}, done=max(acked))
        except AgentiaError:  # unavailable (not confirmed, or the master is gone)
            await asyncio.sleep(0.05)


async def _replay(bus: Bus, sid: str) -> Replay:
    """The log, read like any caller would: the first command after a failover this client
    did not see fails (and makes it re-read the topology), so retry a few times."""
    for _ in range(20):
        try:
            return await bus.replay(sid, 0, None, limit=100_000)
        except BusUnavailable:
            await asyncio.sleep(0.25)
    raise RuntimeError(f"the log of {sid} stayed unreadable")


async def lost_after_failover(server: RedisClusterServer, prefix: str, wait: int,
                              pause_s: float = 0.8) -> Loss:
    bus = Bus(connect(server.url), prefix=prefix, shards=4, wait_replicas=wait, wait_ms=200)
    try:
        sids = [f"s{i}" for i in range(24)]
        for sid in sids:
            await bus.open_session(sid, "alice")
        victim = bus.redis.get_node_from_key(bus.keys.meta(sids[0])).port
        victim_id = next(n["id"] for n in server.nodes() if int(n["port"]) == victim)
        replica = next(int(n["port"]) for n in server.nodes() if n["master"] == victim_id)
        mine = [s for s in sids if bus.redis.get_node_from_key(bus.keys.meta(s)).port == victim]
        acked: dict[str, set[int]] = {s: set() for s in mine}
        stop = asyncio.Event()
        writers = [asyncio.create_task(_submit_forever(bus, s, acked[s], stop)) for s in mine]
        await asyncio.sleep(0.5)
        os.kill(server.procs[replica].pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(pause_s)
            server.kill(victim)
        finally:
            os.kill(server.procs[replica].pid, signal.SIGCONT)
        await asyncio.to_thread(server.wait_ok, 30, False)
        stop.set()
        await asyncio.gather(*writers)
        missing = 0
        for sid in mine:
            have = {o for o, _ in (await _replay(bus, sid)).events}
            missing += sum(o not in have for o in acked[sid])
        return Loss(sum(len(a) for a in acked.values()), missing)
    finally:
        await bus.close()


async def main(runs: int) -> None:
    for run in range(runs):
        for wait in (0, 1):
            with tempfile.TemporaryDirectory() as tmp:
                server = RedisClusterServer(Path(tmp)).start()
                try:
                    loss = await lost_after_failover(server, f"loss{run}", wait)
                finally:
                    server.stop()
            print(f"run {run} wait_replicas={wait}: acked {loss.acked}, "
                  f"missing after the failover {loss.missing}", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    asyncio.run(main(ap.parse_args().runs))
