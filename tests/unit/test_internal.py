"""Unit tests for gateway/internal.py (the edge's internal HTTP port) and the origin rule of
gateway/node.py, without an event loop or sockets."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gateway.internal import answer, readiness, response
from gateway.node import origin_allowed


def node(draining: bool = False, redis_ok: bool = True) -> Any:
    return SimpleNamespace(draining=draining, redis_ok=redis_ok)


@pytest.mark.parametrize(("draining", "redis_ok", "want"), [
    (False, True, (200, "ready\n")), (True, True, (503, "draining\n")),
    (False, False, (503, "redis unreachable\n")), (True, False, (503, "draining\n"))])
def test_readiness(draining: bool, redis_ok: bool, want: tuple[int, str]) -> None:
    assert readiness(node(draining, redis_ok)) == want


def test_answers() -> None:
    n = node()
    assert answer(n, "GET", "/healthz")[::2] == (200, b"ok\n")
    assert answer(n, "GET", "/readyz?verbose=1")[::2] == (200, b"ready\n")
    status, ctype, body = answer(n, "GET", "/metrics")
    assert status == 200 and ctype.startswith("text/plain") and b"agentia_connections" in body
    assert answer(n, "GET", "/v1/ws")[0] == 404
    assert answer(n, "POST", "/readyz")[0] == 405
    assert answer(node(draining=True), "HEAD", "/readyz")[0] == 503


def test_response_bytes() -> None:
    raw = response(503, "text/plain; charset=utf-8", b"draining\n")
    assert raw == (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8"
                   b"\r\nContent-Length: 9\r\nConnection: close\r\n\r\ndraining\n")
    head = response(200, "text/plain", b"ok\n", head_only=True)
    assert head.endswith(b"Content-Length: 3\r\nConnection: close\r\n\r\n")


def test_origin_allowed() -> None:
    allowed = frozenset({"https://chat.example.com"})
    assert origin_allowed(None, "https://evil.example")  # "*"
    assert origin_allowed(allowed, "")  # no Origin: not a browser
    assert origin_allowed(allowed, "https://Chat.Example.com/")
    assert not origin_allowed(allowed, "https://evil.example")
    assert not origin_allowed(allowed, "https://chat.example.com.evil.example")
    assert not origin_allowed(allowed, "null")
