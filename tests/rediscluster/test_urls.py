"""How a deployment says it runs on a Cluster: the ``redis+cluster://`` URL (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from sessions.bus import connect, is_cluster_url


def seeds(client: Any) -> list[tuple[str, int]]:
    return [(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()]


async def test_cluster_url_lists_seed_nodes() -> None:
    c: Any = connect("redis+cluster://10.0.0.1:7000,10.0.0.2:7001")
    assert isinstance(c, RedisCluster)
    assert seeds(c) == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert c.nodes_manager.require_full_coverage is False


async def test_cluster_url_credentials_and_tls() -> None:
    c: Any = connect("rediss+cluster://bob:s%40cret@[::1]:7000")
    assert seeds(c) == [("::1", 7000)]
    kw = c.nodes_manager.connection_kwargs
    assert kw["username"] == "bob" and kw["password"] == "s@cret"
    assert "ssl" in kw["connection_class"].__name__.lower()


async def test_plain_url_keeps_the_single_node_client() -> None:
    assert not is_cluster_url("redis://127.0.0.1:6379/0")
    assert isinstance(connect("redis://127.0.0.1:6379/0"), aioredis.Redis)


@pytest.mark.parametrize("url", ["redis+cluster://host", "redis+cluster://h:1,:2",
                                 "redis+cluster://h:x"])
def test_bad_cluster_url_says_what_it_wants(url: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        connect(url)
