"""Unit tests for the internal HTTP port (agentia/probes.py, the edge's readiness in
gateway/internal.py) and the origin rule of gateway/node.py, without sockets."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from agentia.probes import answer, response
from gateway.internal import readiness
from gateway.node import origin_allowed


def node(draining: bool = False, redis_ok: bool = True) -> Any:
    return SimpleNamespace(draining=draining, redis_ok=redis_ok)


@pytest.mark.parametrize(("draining", "redis_ok", "want"), [
    (False, True, (200, "ready\n")), (True, True, (503, "draining\n")),
    (False, False, (503, "redis unreachable\n")), (True, False, (503, "draining\n"))])
def test_readiness(draining: bool, redis_ok: bool, want: tuple[int, str]) -> None:
    assert readiness(node(draining, redis_ok)) == want


def ready_of(n: Any) -> Any:
    async def ready() -> tuple[int, str]:
        return readiness(n)
    return ready


async def test_answers() -> None:
    r = ready_of(node())
    assert (await answer(r, "GET", "/healthz"))[::2] == (200, b"ok\n")
    assert (await answer(r, "GET", "/readyz?verbose=1"))[::2] == (200, b"ready\n")
    status, ctype, body = await answer(r, "GET", "/metrics")
    assert status == 200 and ctype.startswith("text/plain") and b"agentia_connections" in body
    assert (await answer(r, "GET", "/v1/ws"))[0] == 404
    assert (await answer(r, "POST", "/readyz"))[0] == 405
    assert (await answer(ready_of(node(draining=True)), "HEAD", "/readyz"))[0] == 503


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
