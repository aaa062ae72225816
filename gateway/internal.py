"""The edge's internal HTTP port: ``/healthz``, ``/readyz`` and ``/metrics``.

The server is the kernel's (agentia/probes.py); this module says when an edge is ready. The
public port serves only ``/v1/ws`` and ``/healthz``; this one listens on
``AGENTIA_INTERNAL_HOST:AGENTIA_INTERNAL_PORT`` (``127.0.0.1`` and the public port + 1000 by
default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentia.probes import ProbeServer

if TYPE_CHECKING:
    from gateway.node import EdgeNode


def readiness(node: EdgeNode) -> tuple[int, str]:
    """``/readyz``: stop routing new connections here while draining or Redis is unreachable."""
    if node.draining:
        return 503, "draining\n"
    if not node.redis_ok:
        return 503, "redis unreachable\n"
    return 200, "ready\n"


class InternalServer(ProbeServer):
    """The edge's probe server (``reuse_port`` as the public port, for ``--processes``)."""

    def __init__(self, node: EdgeNode) -> None:
        async def ready() -> tuple[int, str]:
            return readiness(node)

        s = node.settings
        super().__init__(ready, s.internal_host, s.internal_port, s.reuse_port)

    async def start(self) -> InternalServer:
        await super().start()
        return self
