"""Connection lifecycle: drain on SIGTERM, idle timeout, token expiry, agentia up itself."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from agentia.supervise import start
from tests.conftest import READY_S, ROOT, Client, Cluster, Proc, token


async def _closed_with(c: Client, timeout: float = 20) -> int | None:
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(timeout):
            while True:
                await c.recv(timeout)
    return info.value.rcvd.code if info.value.rcvd else None


async def test_sigterm_drains_with_1012_and_exits(cluster: Cluster) -> None:
    edge = cluster.edge()
    clients = [await Client.open(edge.port, session=f"d{n}") for n in range(5)]
    for c in clients:
        await c.recv()
    edge.proc.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(*(_closed_with(c) for c in clients))
    assert codes == [1012] * 5
    assert edge.proc.wait(15) == 0


async def test_idle_connection_is_closed_but_pings_keep_it(cluster: Cluster) -> None:
    edge = cluster.edge(AGENTIA_IDLE_TIMEOUT_S="1.5")
    idle = await Client.open(edge.port)
    busy = await Client.open(edge.port)
    await idle.recv()
    await busy.recv()
    for _ in range(8):
        await busy.send(type="ping")
        await busy.until("pong")
        await asyncio.sleep(0.5)
    assert await _closed_with(idle, 5) == 4001
    await busy.send(type="ping")
    assert (await busy.until("pong"))["type"] == "pong"


async def test_token_expiry_closes_with_4003(cluster: Cluster) -> None:
    edge = cluster.edge(AGENTIA_IDLE_TIMEOUT_S="3")
    c = await Client.open(edge.port, tok=token("alice", ttl=1))
    await c.recv()
    t0 = time.monotonic()
    code = None
    while code is None and time.monotonic() - t0 < 15:
        try:
            await c.send(type="ping")  # stay active so only the expiry can close us
            await c.until("pong", timeout=2)
            await asyncio.sleep(0.3)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else -1
    assert code == 4003


def test_agentia_up_runs_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTIA_")}
    env |= {"AGENTIA_STATE_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    env.pop("OPENAI_API_KEY", None)
    said = io.BytesIO()
    up, info = start([sys.executable, "-m", "launch.cli", "up", "--port", "0", "--api-port",
                      "0"], env, "AGENTIA_UP_READY", READY_S, cwd=ROOT,
                     stderr=subprocess.DEVNULL, echo=said, supervised=False)
    try:
        # development mode, said once: the children accept the public dev secret
        assert [ln for ln in said.getvalue().splitlines(keepends=True)
                if b"AGENTIA_DEV=true" in ln] == [
            b"dev mode   AGENTIA_DEV=true: the public dev secret is accepted; never in "
            b"production\n"]
        pids = [int(p) for p in info["pids"].split(",")]
        # edge, worker, api, redis (+ voice worker and LiveKit server when voice is on)
        assert len(pids) == (6 if info["voice"] == "on" else 4)
        out = subprocess.run(
            [sys.executable, "-m", "launch.cli", "chat", "--url", info["url"], "-m",
             "what is 19 + 23"], cwd=ROOT, env=env, capture_output=True, timeout=60, check=True)
        assert b"[tool: calculate" in out.stdout and b"42" in out.stdout
        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


async def test_gateway_processes_share_a_port_and_are_restarted(cluster: Cluster) -> None:
    sup = Proc(["gateway", "--port", "0", "--processes", "2"], cluster.env,
               "AGENTIA_GATEWAY_READY")
    cluster.procs.append(sup)
    port, pids = sup.port, [int(p) for p in sup.info["pids"].split(",")]
    clients: list[tuple[str, Client]] = []
    for _ in range(16):  # the kernel spreads connections over both processes
        c = await Client.open(port)
        clients.append(((await c.recv())["node"], c))
    nodes = {n for n, _ in clients}
    assert len(nodes) == 2
    await clients[0][1].send(type="ping")
    await clients[0][1].until("pong")
    os.kill(pids[0], signal.SIGKILL)
    fresh: set[object] = set()
    for _ in range(100):  # the supervisor brings a replacement up on the same port
        await asyncio.sleep(0.1)
        fresh = {(await _welcome(port))["node"] for _ in range(8)}
        if len(fresh) == 2 and fresh != nodes:
            break
    assert len(fresh) == 2 and fresh != nodes
    # which node was the victim: the one whose clients were dropped
    dropped = {n for n, c in clients if await _is_dropped(c)}
    assert len(dropped) == 1
    survivors = [c for n, c in clients if n not in dropped]
    sup.proc.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(*(_closed_with(c) for c in survivors))
    assert codes and set(codes) == {1012}
    assert sup.proc.wait(30) == 0
    for pid in pids[1:]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def _is_dropped(c: Client) -> bool:
    try:
        await c.send(type="ping")
        await c.until("pong", timeout=5)
        return False
    except ConnectionClosed:
        return True


async def _welcome(port: int) -> dict[str, object]:
    c = await Client.open(port)
    try:
        return await c.recv()
    finally:
        await c.close()
