"""The same harness as tests/conftest.py, on a real Redis Cluster: three masters with a replica
each, from Debian's ``redis-server`` on loopback ports. ``redis_server`` is overridden, so the
``bus`` and ``cluster`` fixtures (and any test imported here from tests/e2e) run against the
Cluster through a ``redis+cluster://`` URL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from launch.redis_server import RedisClusterServer
from tests.conftest import Cluster


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServer]:
    server = RedisClusterServer(tmp_path_factory.mktemp("rediscluster")).start()
    yield server
    server.stop()


@pytest.fixture
def cluster(redis_server: RedisClusterServer, prefix: str) -> Iterator[Cluster]:
    """Our processes (edges, workers) against the Redis Cluster, on the default edge
    transport only: the transport does not touch Redis, and CI time is counted."""
    c = Cluster(redis_server.url, prefix)
    yield c
    c.stop()
    assert c.edge_tracebacks() == []


@pytest.fixture
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServer]:
    """A Cluster of the test's own, for tests that break it (kill a master)."""
    server = RedisClusterServer(tmp_path_factory.mktemp("rediscluster-own")).start()
    yield server
    server.stop()
