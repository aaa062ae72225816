"""``agentia chat`` (built on the Python SDK) survives its edge mid-reply: killed with SIGKILL
or restarted with SIGTERM (drain, 1012), then started again on the same port. Real processes:
Redis, edges, a worker and ``agentia chat`` itself. What chat printed for the reply must be
exactly the reply the session log holds: nothing lost, nothing printed twice."""

from __future__ import annotations

import asyncio
import os
import re
import select
import socket
import subprocess
import sys
import time

import pytest

from agentia_client import AgentiaClient, Backoff, Reply
from tests.conftest import ROOT, Cluster, Proc, token

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

LONG = "please tell me something rather long so that the reply streams for a while"
SECOND = "what is 6 * 7"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def edge_on(cluster: Cluster, port: int) -> Proc:
    p = Proc(["gateway", "--port", str(port)], cluster.env, "AGENTIA_EDGE_READY")
    cluster.procs.append(p)
    cluster.edges.append(p)
    return p


def read_until(fd: int, out: bytearray, done: bytes | int, timeout: float) -> None:
    """Read ``fd`` into ``out`` until it holds ``done`` (bytes) or that many bytes (int)."""
    deadline = time.monotonic() + timeout
    while (done not in out) if isinstance(done, bytes) else (len(out) < done):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"chat did not print {done!r} in {timeout} s: {bytes(out)!r}")
        if select.select([fd], [], [], min(left, 0.5))[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"chat's output ended early: {bytes(out)!r}")
            out += chunk


async def replies_in_the_log(url: str, session: str, n: int) -> list[str]:
    """The first ``n`` replies of the session, read from its log by a second client."""
    c = AgentiaClient(url, token("alice"), session, after=0, backoff=Backoff(max_attempts=5))
    found: list[str] = []
    async with asyncio.timeout(30), c:  # the close too: it once hung after a resume
        async for item in c.events():
            if isinstance(item, dict) and item["type"] == Reply.type:
                found.append(item["text"])
                if len(found) == n:
                    return found
    raise AssertionError(f"events() ended after {found}")


@pytest.mark.parametrize("how", ["kill", "restart"])
def test_chat_survives_its_edge_going_away_mid_reply(cluster: Cluster, how: str) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/v1/ws"
    first = edge_on(cluster, port)
    cluster.worker("tests.agents_fixtures:slow", SLOW_DELAY="0.05")
    session = f"chat-{how}"
    chat = subprocess.Popen(
        [sys.executable, "-m", "launch.cli", "chat", "--url", url, "--user", "alice",
         "--session", session, "-m", LONG, "-m", SECOND],
        cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert chat.stdout is not None
        out = bytearray()
        asked = f"> {LONG}\n".encode()
        read_until(chat.stdout.fileno(), out, asked, 30)
        start = out.index(asked) + len(asked)
        read_until(chat.stdout.fileno(), out, start + 12, 30)  # the reply is streaming
        if how == "kill":
            first.kill()
        else:
            first.stop()  # SIGTERM: the edge drains and closes with 1012
        seen_before = bytes(out[start:])
        edge_on(cluster, port)
        rest, err = chat.communicate(timeout=60)
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait()
    assert chat.returncode == 0, err
    assert b"Traceback" not in err
    printed = (bytes(out) + rest).decode()
    reply, answer = asyncio.run(replies_in_the_log(url, session, 2))
    assert LONG in reply
    assert len(seen_before.decode(errors="ignore")) < len(reply)  # it went away mid-reply
    streamed = printed[start:].split(f"\n> {SECOND}\n")[0]
    assert streamed == reply  # each chunk once, in order (a partial fills the gap)
    # the tool call with its arguments (an edge before tool_call events: the name only)
    assert re.search(rf"> {re.escape(SECOND)}\n\[tool: calculate"
                     rf'( \{{"expression":"6 \* 7"\}})?\] {re.escape(answer)}\n$', printed), printed
    assert "42" in answer


def test_chat_whose_edge_never_comes_back_ends_with_one_line(cluster: Cluster) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/v1/ws"
    edge = edge_on(cluster, port)
    cluster.worker("tests.agents_fixtures:slow", SLOW_DELAY="0.05")
    chat = subprocess.Popen(
        [sys.executable, "-m", "launch.cli", "chat", "--url", url, "--user", "alice",
         "-m", LONG], cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert chat.stdout is not None
        read_until(chat.stdout.fileno(), bytearray(), f"> {LONG}\n".encode(), 30)
        edge.kill()
        started = time.monotonic()
        _, err = chat.communicate(timeout=60)
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait()
    assert chat.returncode == 1 and time.monotonic() - started < 45
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "lost the connection to" in lines[0] and url in lines[0], err
