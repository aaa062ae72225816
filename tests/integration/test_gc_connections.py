"""Closed connections are freed under the edge's garbage-collector policy
(gateway/gcpause.py): a real edge node and transport in the test's loop, real sockets, the
real Redis of the harness. The young generations are small here so that a few hundred
connections cross many collections, as a storm's thousands do."""

from __future__ import annotations

import asyncio
import gc
import resource
from collections.abc import AsyncIterator, Iterator

import pytest

from agentia.settings import from_env
from agentia.settings_edge import EdgeSettings
from gateway import gcpause
from gateway.connection import Connection
from gateway.node import EdgeNode
from gateway.transport import transport_for
from sessions.bus import Bus
from tests.conftest import TEST_SECRET, TRANSPORTS, Client


@pytest.fixture(autouse=True)
def _edge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (5_000, 10_000))
    monkeypatch.setenv("AGENTIA_DEV", "true")


@pytest.fixture
def tuned() -> Iterator[int]:
    """The edge's policy on this process for one test (start-up objects frozen); undone after.
    Yields the frozen count the policy left."""
    before = gc.get_threshold()
    gcpause.tune(500, 0)
    try:
        yield gc.get_freeze_count()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        gc.callbacks.remove(gcpause.PAUSES)
        gcpause.PAUSES.pending.clear()


@pytest.fixture(params=TRANSPORTS)
async def edge(request: pytest.FixtureRequest, bus: Bus) -> AsyncIterator[tuple[EdgeNode, int]]:
    settings = from_env(EdgeSettings, jwt_secret=TEST_SECRET, port=0, host="127.0.0.1",
                        transport=request.param)
    node = EdgeNode(settings, bus)
    await bus.heartbeat_node(node.id)
    server = await transport_for(request.param)(node)
    yield node, server.port
    await server.close(2.0)
    for task in list(node.tasks):
        task.cancel()
    await asyncio.gather(*node.tasks, return_exceptions=True)


def live_connections() -> int:
    return sum(isinstance(o, Connection) for o in gc.get_objects())


async def storm(port: int, n: int) -> None:
    clients = await asyncio.gather(*(Client.open(port, user=f"u{i}") for i in range(n)))
    for c in clients:
        await c.until("welcome")
    for c in clients:
        await c.close()


async def test_closed_connections_are_freed(edge: tuple[EdgeNode, int], tuned: int) -> None:
    node, port = edge
    for _ in range(3):  # survivors of many young collections, promoted to the oldest
        await storm(port, 60)
    for _ in range(200):  # the edge sees the closes within 10 s
        if not node.count:
            break
        await asyncio.sleep(0.05)
    assert node.count == 0
    await asyncio.sleep(0.2)  # the transports' last callbacks
    # measured: all 180 are still alive here (in reference cycles with their transport, on
    # both transports): only the cyclic collector frees them, so it must still see them
    gc.collect()
    assert live_connections() == 0, "a closed connection is still referenced"
    assert gc.get_freeze_count() <= tuned, "the policy froze connection objects"
