"""The edge's /metrics as Prometheus scrapes it (the chart's ServiceMonitor, on the internal
port): one Content-Length that matches the body, one Content-Type, over both transports."""

from __future__ import annotations

import os
import socket

import pytest

from launch.redis_server import RedisServer
from tests.conftest import TEST_SECRET, Proc


def raw_get(port: int, path: str) -> tuple[str, list[tuple[str, str]], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = [(k.strip().lower(), v.strip()) for k, v in (ln.split(":", 1) for ln in lines)]
    return status, headers, body


@pytest.mark.parametrize("transport", ["websockets", "picows"])
def test_edge_metrics_response_is_well_formed(redis_server: RedisServer, prefix: str,
                                              transport: str) -> None:
    env = {**os.environ, "AGENTIA_REDIS_URL": redis_server.url, "AGENTIA_REDIS_PREFIX": prefix,
           "AGENTIA_TRANSPORT": transport, "AGENTIA_JWT_SECRET": TEST_SECRET}
    edge = Proc(["gateway", "--port", "0"], env, "AGENTIA_EDGE_READY")
    try:
        status, headers, body = raw_get(edge.internal_port, "/metrics")
    finally:
        edge.stop()
    assert status.startswith("HTTP/1.1 200")
    lengths = [v for k, v in headers if k == "content-length"]
    types = [v for k, v in headers if k == "content-type"]
    assert lengths == [str(len(body))], headers
    assert len(types) == 1 and types[0].startswith("text/plain"), headers
    assert b"\nagentia_connections " in body
