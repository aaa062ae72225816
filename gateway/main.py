"""Run one edge process: uvloop, the websockets server, background loops, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from agentia import tracing
from agentia.logs import bind
from agentia.ports import busy_line, reason
from agentia.settings_edge import EdgeSettings
from gateway import gcpause
from gateway.internal import InternalServer
from gateway.node import EdgeNode
from gateway.transport import transport_for
from sessions.bus import Bus, connect

log = logging.getLogger("agentia.edge")


class PortBusy(Exception):
    """A port the edge must listen on cannot be; the message is the one line to print."""


async def serve_edge(settings: EdgeSettings, ready: asyncio.Event | None = None) -> None:
    bus = Bus(connect(settings.redis_url), prefix=settings.redis_prefix, shards=settings.shards)
    if not settings.delivery_reads_ahead:
        bus.readers_kept = 0
    node = EdgeNode(settings, bus)
    bind(node=node.id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    start = transport_for(settings.transport)
    # bind both ports before any loop runs: a busy one ends the process at once, nothing to stop
    try:
        server = await start(node)
    except OSError as exc:
        await bus.close()
        raise PortBusy(busy_line("agentia gateway", "edge WebSocket", settings.host,
                                 settings.port, reason(exc), "--port")) from None
    try:
        internal = await InternalServer(node).start()
    except OSError as exc:
        await server.close(1.0)
        await bus.close()
        raise PortBusy(busy_line("agentia gateway", "edge /readyz and /metrics",
                                 settings.internal_host, settings.internal_port, reason(exc),
                                 "AGENTIA_INTERNAL_PORT")) from None
    with contextlib.suppress(Exception):
        await bus.heartbeat_node(node.id)
    for coro in (node.deliver_forever(), node.heartbeat_forever(), node.sweep_forever(),
                 node.metrics_forever(), node.user_sessions_forever(),
                 node.leases_forever(), gcpause.PAUSES.forever()):
        node.spawn(coro)
    port = server.port
    log.info("edge %s listening on ws://%s:%s/v1/ws (max %d connections, %s); /readyz and "
             "/metrics on http://%s:%s", node.id, settings.host, port, settings.max_connections,
             settings.transport, settings.internal_host, internal.port)
    print(f"AGENTIA_EDGE_READY node={node.id} port={port} internal_port={internal.port}",
          flush=True)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("edge %s draining %d connections", node.id, node.count)
    await node.drain(settings.drain_s)
    await server.close(2.0)
    await internal.close()
    await bus.close()


def run(settings: EdgeSettings) -> None:
    tracing.setup("agentia-edge")  # OTEL_* (docs/operations.md#tracing); off by default
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        log.warning("uvloop is not installed; using the default asyncio loop")
    gcpause.tune(settings.gc_gen0_threshold, settings.gc_gen1_threshold)
    try:
        asyncio.run(serve_edge(settings))
    except PortBusy as exc:
        print(exc, file=sys.stderr, flush=True)
        raise SystemExit(1) from None
