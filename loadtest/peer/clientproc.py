"""One client process of the peer benchmark: opens its share of connections, then obeys the
parent over a pipe (``snap``: counters; ``stop``: close everything and exit).

Connections are opened with at most ``inflight`` handshakes at a time, spread round robin over
this process's 127.0.0.x source addresses (bound with ``IP_BIND_ADDRESS_NO_PORT`` so the
kernel picks the port with the whole 4-tuple). A handshake's latency runs from the TCP
connect to the adapter's "ready" (Agentia: ``welcome``; Centrifugo: the subscribe reply).
Agentia's clients ping every heartbeat, spread over the heartbeat; Centrifugo's answer its
server's pings. Everything is bounded: a handshake times out, the process exits on ``stop``
or when the parent goes away.
"""

from __future__ import annotations

import asyncio
import socket
import time
from multiprocessing.connection import Connection
from typing import Any

from loadtest.peer.adapters import AgentiaAdapter, CentrifugoAdapter, Tally
from loadtest.peer.wsclient import WSClient

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h


def run(spec: dict[str, Any], pipe: Connection) -> None:
    import uvloop

    uvloop.install()
    asyncio.run(_main(spec, pipe))


async def _main(spec: dict[str, Any], pipe: Connection) -> None:
    tally = Tally()
    cls = AgentiaAdapter if spec["kind"].startswith("agentia") else CentrifugoAdapter
    adapter = cls(spec["secret"], tally, spec["heartbeat_s"])
    conns: list[WSClient] = []
    lat: list[float] = []
    t0 = time.perf_counter()
    await _open_all(spec, adapter, tally, conns, lat)
    pipe.send(("open", lat, time.perf_counter() - t0, _snap(tally, conns)))
    pinger = asyncio.create_task(_keepalive(adapter, conns, spec["heartbeat_s"]))
    loop = asyncio.get_running_loop()
    try:
        while True:
            cmd = await loop.run_in_executor(None, _recv, pipe)
            if cmd == "snap":
                pipe.send(("snap", _snap(tally, conns)))
            else:  # "stop", or the parent is gone
                break
    finally:
        pinger.cancel()
        for c in conns:
            c.close()
        await asyncio.sleep(0.5)
        for c in conns:
            c.abort()
    pipe.send(("stopped", _snap(tally, conns)))


def _recv(pipe: Connection) -> str:
    try:
        return str(pipe.recv())
    except EOFError:
        return "stop"


def _snap(tally: Tally, conns: list[WSClient]) -> dict[str, Any]:
    return {"ready": tally.ready, "events": tally.events, "keepalives": tally.keepalives,
            "dropped": sum(1 for c in conns if c.closed), "errors": dict(tally.errors),
            "held": len(conns)}


async def _open_all(spec: dict[str, Any], adapter: Any, tally: Tally,
                    conns: list[WSClient], lat: list[float]) -> None:
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(spec["inflight"])
    host, port, sources = spec["host"], spec["port"], spec["sources"]

    async def one(idx: int) -> None:
        async with sem:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t = time.perf_counter()
            proto: WSClient | None = None
            try:
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((sources[idx % len(sources)], 0))
                sock.setblocking(False)
                await asyncio.wait_for(loop.sock_connect(sock, (host, port)), spec["timeout"])
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _, proto = await loop.create_connection(
                    lambda: WSClient(adapter, idx, f"{host}:{port}"), sock=sock)
                await asyncio.wait_for(asyncio.shield(proto.ready), spec["timeout"])
            except Exception as exc:  # counted, never silent: the parent reports errors
                tally.error(str(exc) or type(exc).__name__)
                if proto is not None:
                    proto.abort()
                else:
                    sock.close()
                return
            lat.append(time.perf_counter() - t)
            conns.append(proto)

    await asyncio.gather(*(one(i) for i in spec["indices"]))


async def _keepalive(adapter: Any, conns: list[WSClient], every_s: float) -> None:
    """Each connection keeps alive once per ``every_s``, spread in slices over the period."""
    slices = 20
    while True:
        n = len(conns)
        for k in range(slices):
            for c in conns[k * n // slices:(k + 1) * n // slices]:
                if not c.closed:
                    adapter.keepalive(c)
            await asyncio.sleep(every_s / slices)
