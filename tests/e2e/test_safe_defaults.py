"""Safe defaults on real processes, over both transports (issue 10 items 3, 7, 8, 10): no start
with a public or short secret outside development mode, one string per token, probes and metrics
only on the internal port, browser origins checked at the upgrade and by the API."""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import sys

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from agentia.settings import DEV_SECRET
from tests.conftest import ROOT, Client, Cluster, Proc, token

REFUSAL = ("agentia: configuration error: AGENTIA_JWT_SECRET is {what}; set a secret of at least "
           "32 bytes (or AGENTIA_DEV=true for local development)")


def raw_http(port: int, path: str, method: str = "GET",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on a fresh socket, read to the end."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n"
                     .encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
    return int(status.split()[1]), fields, body


async def http(port: int, path: str, method: str = "GET",
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(raw_http, port, path, method, headers)


async def handshake(port: int, tok: str, origin: str | None = None) -> tuple[int, bytes]:
    """(101, first frame) or (refusal status, body) of one upgrade."""
    try:
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/v1/ws", additional_headers={"Authorization": f"Bearer {tok}"},
            origin=origin, compression=None)  # type: ignore[arg-type]
    except InvalidStatus as exc:
        return exc.response.status_code, bytes(exc.response.body or b"")
    try:
        first = await asyncio.wait_for(ws.recv(), 10)
        return 101, first if isinstance(first, bytes) else first.encode()
    finally:
        await ws.close()


# ---------------------------------------------------------------- item 3: the secret


@pytest.mark.parametrize(("args", "secret", "what"), [
    (["gateway", "--port", "0"], None, "the public default"),
    (["gateway", "--port", "0"], "short-secret-of-31-bytes-123456", "only 31 bytes"),
    (["gateway", "--port", "0", "--processes", "2"], None, "the public default"),
    (["api", "--port", "0"], None, "the public default"),
    (["api", "--port", "0"], DEV_SECRET, "the public default"),
], ids=["gateway", "gateway-short", "supervisor", "api", "api-explicit-default"])
def test_refuses_to_start_with_a_public_or_short_secret(
        cluster: Cluster, args: list[str], secret: str | None, what: str) -> None:
    env = {k: v for k, v in cluster.env.items() if k not in ("AGENTIA_JWT_SECRET", "AGENTIA_DEV")}
    if secret is not None:
        env["AGENTIA_JWT_SECRET"] = secret
    done = subprocess.run([sys.executable, "-m", "launch.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    assert done.stderr.decode().splitlines() == [REFUSAL.format(what=what)]
    assert b"AGENTIA_EDGE_READY" not in done.stdout and b"AGENTIA_API_READY" not in done.stdout


async def test_dev_mode_accepts_the_public_default(cluster: Cluster) -> None:
    dev = {"AGENTIA_DEV": "true", "AGENTIA_JWT_SECRET": DEV_SECRET}
    edge = cluster.edge(**dev)
    api = cluster.api(**dev)
    status, first = await handshake(edge.port, token("dana", secret=DEV_SECRET))
    assert status == 101 and b'"welcome"' in first
    assert (await http(api.port, "/healthz"))[0] == 200
    # the test secret is not the key here: proof the key in use is the default
    assert (await handshake(edge.port, token("dana")))[0] == 401


# ---------------------------------------------------------------- item 7: canonical tokens


def _same_bytes_variants(tok: str) -> list[str]:
    """Strings a lenient base64 decoder reads as the same signature."""
    head, body, sig = tok.split(".")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    spare = [sig[:-1] + c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
             if sig[:-1] + c != sig
             and base64.urlsafe_b64decode(sig[:-1] + c + "=" * (-len(sig) % 4)) == raw]
    assert spare, "an HS256 signature (43 characters) has 2 spare bits"
    return [f"{head}.{body}.{s}" for s in (*spare, sig + "=", sig + "!", sig[:5] + "*" + sig[5:])]


async def test_non_canonical_signatures_refused(cluster: Cluster) -> None:
    edge = cluster.edge()
    good = token("erin")
    for bad in _same_bytes_variants(good):
        status, body = await handshake(edge.port, bad)
        assert (status, body) == (401, b"invalid token: not three canonical base64url "
                                       b"segments\n"), bad
    status, first = await handshake(edge.port, good)
    assert status == 101 and b'"welcome"' in first


# ---------------------------------------------------------------- item 8: the internal port


async def test_probes_and_metrics_only_on_the_internal_port(cluster: Cluster) -> None:
    edge = cluster.edge()
    assert edge.internal_port not in (0, edge.port)
    c = await Client.open(edge.port)
    await c.recv()
    for path in ("/metrics", "/readyz", "/", "/v1/ws/", "/healthz/x"):
        status, _, _ = await http(edge.port, path)
        assert status == 404, path
    assert (await http(edge.port, "/healthz"))[::2] == (200, b"ok\n")
    assert (await http(edge.internal_port, "/healthz"))[::2] == (200, b"ok\n")
    assert (await http(edge.internal_port, "/readyz"))[::2] == (200, b"ready\n")
    status, headers, body = await http(edge.internal_port, "/metrics")
    assert status == 200 and headers["content-length"] == str(len(body))
    assert headers["content-type"].startswith("text/plain") and b"\nagentia_connections " in body
    assert b'\nagentia_gc_pause_seconds_count{generation="1"} ' in body
    assert (await http(edge.internal_port, "/v1/ws"))[0] == 404
    assert (await http(edge.internal_port, "/readyz", method="POST"))[0] == 405
    status, headers, body = await http(edge.internal_port, "/readyz", method="HEAD")
    assert (status, headers["content-length"], body) == (200, "6", b"")
    await c.close()


def test_supervisor_shares_the_internal_port(cluster: Cluster) -> None:
    sup = Proc(["gateway", "--port", "0", "--processes", "2"], cluster.env,
               "AGENTIA_GATEWAY_READY")
    cluster.procs.append(sup)
    internal = int(sup.info["internal_port"])
    assert internal not in (0, sup.port)
    assert raw_http(sup.port, "/metrics")[0] == 404
    for _ in range(4):  # whichever process answers, the same probes
        assert raw_http(internal, "/readyz")[::2] == (200, b"ready\n")
        assert raw_http(internal, "/metrics")[0] == 200


# ---------------------------------------------------------------- item 10: origins

SITE = "https://chat.example.com"


async def test_origins_checked_at_the_upgrade(cluster: Cluster) -> None:
    strict = cluster.edge(AGENTIA_ALLOWED_ORIGINS=f"{SITE}, https://other.example.com")
    assert await handshake(strict.port, token("fay"), origin="https://evil.example") == (
        403, b"origin not allowed\n")
    # refused before the token is even looked at
    assert (await handshake(strict.port, "not-a-token", origin="https://evil.example"))[0] == 403
    for origin in (SITE, "https://Chat.Example.com", "https://other.example.com", None):
        status, first = await handshake(strict.port, token("fay"), origin=origin)
        assert status == 101 and b'"welcome"' in first, origin
    default = cluster.edge()  # "*": any origin
    status, _ = await handshake(default.port, token("fay"), origin="https://evil.example")
    assert status == 101


async def test_api_cors_follows_the_same_list(cluster: Cluster) -> None:
    api = cluster.api(AGENTIA_ALLOWED_ORIGINS=SITE)
    status, headers, _ = await http(api.port, "/v1/config", headers={"Origin": SITE})
    assert status == 200 and headers["access-control-allow-origin"] == SITE
    status, headers, _ = await http(api.port, "/v1/config",
                                    headers={"Origin": "https://evil.example"})
    assert status == 200 and "access-control-allow-origin" not in headers
    preflight = {"Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"}
    status, headers, _ = await http(api.port, "/v1/sessions", "OPTIONS",
                                    {"Origin": SITE, **preflight})
    assert status == 200 and headers["access-control-allow-origin"] == SITE
    status, _, _ = await http(api.port, "/v1/sessions", "OPTIONS",
                              {"Origin": "https://evil.example", **preflight})
    assert status == 400
    anyone = cluster.api()
    status, headers, _ = await http(anyone.port, "/v1/config",
                                    headers={"Origin": "https://evil.example"})
    assert headers["access-control-allow-origin"] == "*"
