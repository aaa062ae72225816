"""MCP servers for agents, end to end: a real edge, a worker whose agent has a stdio and a
streamable HTTP MCP server (tests/mcp_servers/notes.py, real processes), Redis; a client's turns
call the tools. The worker's /readyz names a dead server and recovers with it; shutdown (and a
killed worker) leaves no stdio server process behind."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from launch.redis_server import RedisServer
from tests.conftest import ROOT, Client, Cluster, Proc
from tests.mcp_servers import alive, start_http, stop

pytestmark = pytest.mark.e2e
STDIO_TIMEOUT_S = 3


def agents_file(tmp_path: Path, http_port: int) -> Path:
    """The registry: one agent with the notes server over stdio and over HTTP."""
    path = tmp_path / "agents.toml"
    path.write_text(f"""
[[agents]]
name = "notes"
agent = "tests.mcp_servers.agents:notes_agent"

[[agents.mcp]]
name = "notes"
command = {json.dumps(sys.executable)}
args = ["-m", "tests.mcp_servers.notes"]
cwd = {json.dumps(str(ROOT))}
timeout_s = {STDIO_TIMEOUT_S}

[[agents.mcp]]
name = "web"
url = "http://127.0.0.1:{http_port}/mcp"
""")
    return path


@dataclass
class Setup:
    cluster: Cluster
    edge: Proc
    worker: Proc
    http: subprocess.Popen[bytes]
    http_port: int
    agents: Path

    def start_worker(self) -> Proc:
        w = Proc(["worker", "--agents", str(self.agents)],
                 {**self.cluster.env, "AGENTIA_WORKER_INTERNAL_PORT": "0",
                  "AGENTIA_MCP_PING_S": "0.3"}, "AGENTIA_WORKER_READY")
        self.cluster.procs.append(w)
        return w


@pytest.fixture
async def setup(redis_server: RedisServer, prefix: str, tmp_path: Path
                ) -> AsyncIterator[Setup]:
    http, port = start_http()
    c = Cluster(redis_server.url, prefix)
    try:
        s = Setup(c, c.edge(), None, http, port, agents_file(tmp_path, port))  # type: ignore[arg-type]
        s.worker = s.start_worker()
        yield s
    finally:
        c.stop()
        stop(s.http)
    assert c.edge_tracebacks() == []
    assert noisy(c) == []  # a worker whose MCP server died logs a few lines, not tracebacks


def noisy(c: Cluster) -> list[str]:
    """Logs with a traceback, a line per HTTP request, or more than 40 lines."""
    logs = {p.log.name: Path(p.log.name).read_text() for p in c.procs}
    return [name for name, text in logs.items()
            if "Traceback" in text or "HTTP Request" in text or text.count("\n") > 40]


async def probe(port: int, path: str = "/readyz") -> tuple[int, str]:
    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
    return await asyncio.to_thread(get)


async def until_status(port: int, status: int, within: float = 20) -> str:
    for _ in range(int(within / 0.1)):
        got, body = await probe(port)
        if got == status:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz is {got} {body!r} after {within} s, wanted {status}")


async def ask(c: Client, text: str) -> str:
    await c.send(type="send", id=f"m{time.monotonic_ns()}", text=text)
    return str((await c.until("reply", timeout=30))["text"])


async def test_turns_call_mcp_tools_over_stdio_and_http(setup: Setup) -> None:
    port = setup.worker.internal_port
    assert await probe(port) == (200, "ready\n")
    assert await probe(port, "/healthz") == (200, "ok\n")
    status, metrics = await probe(port, "/metrics")
    assert status == 200 and "agentia_turns_total" in metrics
    c = await Client.open(setup.edge.port)
    try:
        reply = await ask(c, 'use tool mcp_notes__add_note with {"text": "buy milk"}')
        assert "noted #1: buy milk" in reply
        reply = await ask(c, 'use tool mcp_web__add_note with {"text": "call mom"}')
        assert "noted #1: call mom" in reply  # another server: its own notes
        reply = await ask(c, "use tool mcp_notes__list_notes")
        assert "buy milk" in reply and "call mom" not in reply
        reply = await ask(c, 'use tool mcp_notes__fail with {"message": "no such note"}')
        assert "no such note" in reply
        t0 = time.monotonic()
        reply = await ask(c, 'use tool mcp_notes__slow with {"seconds": 60}')
        assert f"did not answer within {STDIO_TIMEOUT_S} s" in reply
        assert time.monotonic() - t0 < STDIO_TIMEOUT_S + 10
        # a slow call is not a dead server: the same process still has the note
        assert "buy milk" in await ask(c, "use tool mcp_notes__list_notes")
    finally:
        await c.close()


async def test_http_server_down_then_back(setup: Setup) -> None:
    port = setup.worker.internal_port
    c = await Client.open(setup.edge.port)
    try:
        assert "noted #1: x" in await ask(c, 'use tool mcp_web__add_note with {"text": "x"}')
        stop(setup.http)
        body = await until_status(port, 503)
        assert body.startswith("mcp server down: web (") and "notes" not in body
        t0 = time.monotonic()
        reply = await ask(c, "use tool mcp_web__list_notes")
        assert "MCP server 'web' is unavailable" in reply
        assert time.monotonic() - t0 < 10  # no wait on a dead server
        assert "buy" not in await ask(c, "use tool mcp_notes__list_notes")  # stdio unaffected
        setup.http, _ = start_http(setup.http_port)
        assert await until_status(port, 200) == "ready\n"
        assert "no notes" in await ask(c, "use tool mcp_web__list_notes")  # a new server
    finally:
        await c.close()


async def stdio_pid(port: int) -> int:
    c = await Client.open(port)
    try:
        reply = await ask(c, "use tool mcp_notes__pid")
    finally:
        await c.close()
    m = re.search(r"'text': '(\d+)'", reply)
    assert m, reply
    return int(m.group(1))


async def test_shutdown_leaves_no_stdio_server(setup: Setup) -> None:
    pid = await stdio_pid(setup.edge.port)
    assert alive(pid)
    setup.worker.stop()  # SIGTERM: drain, then close the MCP servers
    assert setup.worker.proc.returncode == 0
    assert not alive(pid)
    # a worker killed outright: its stdio server sees its stdin close and exits
    worker = setup.start_worker()
    pid = await stdio_pid(setup.edge.port)
    assert alive(pid)
    worker.kill(signal.SIGKILL)
    for _ in range(100):
        if not alive(pid):
            break
        await asyncio.sleep(0.1)
    assert not alive(pid)
