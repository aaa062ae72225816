"""sessions/mcp.py against real MCP servers (tests/mcp_servers/notes.py) over stdio and
streamable HTTP: connect, call, bounded failures, reconnect, close (no process left)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest

from sessions.mcp import McpConfig, McpPool, McpUnavailable, tool_error
from tests.mcp_servers import alive, http_entry, start_http, stdio_entry, stop


def text(result: object) -> str:
    return str(result.content[0].text)  # type: ignore[attr-defined]


async def until(pool: McpPool, dead: list[str], within: float = 20) -> None:
    for _ in range(int(within / 0.05)):
        if pool.dead() == dead:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"dead servers {pool.dead()} after {within} s, wanted {dead}")


@pytest.fixture
async def stdio_pool() -> AsyncIterator[McpPool]:
    pool = McpPool([McpConfig.from_entry(stdio_entry(timeout_s=1.5))], ping_s=0.3)
    await pool.start()
    yield pool
    await pool.close()


async def test_stdio_calls_and_bounded_failures(stdio_pool: McpPool) -> None:
    notes = stdio_pool.servers["notes"]
    assert stdio_pool.dead() == []
    names = {t.name for t in await notes.list_tools()}
    assert {"add_note", "list_notes", "slow", "fail", "pid"} <= names
    assert text(await notes.call_tool("add_note", {"text": "buy milk"})) == "noted #1: buy milk"
    assert text(await notes.call_tool("list_notes", {})) == "buy milk"
    failed = await notes.call_tool("fail", {"message": "boom"})
    assert failed.is_error and "boom" in text(failed)
    t0 = time.monotonic()
    with pytest.raises(McpUnavailable, match=r"did not answer within 1\.5 s") as slow:
        await notes.call_tool("slow", {"seconds": 30})
    assert time.monotonic() - t0 < 5
    assert tool_error(None, slow.value) == str(slow.value)  # type: ignore[arg-type]
    assert stdio_pool.dead() == []  # slow is not dead: the probe still answers


async def test_stdio_child_killed_is_restarted_and_closed(stdio_pool: McpPool) -> None:
    notes = stdio_pool.servers["notes"]
    pid = int(text(await notes.call_tool("pid", {})))
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(McpUnavailable, match="'notes' is unavailable"):
        await notes.call_tool("pid", {})
    await until(stdio_pool, ["notes"])  # the failed call made it probe at once
    await until(stdio_pool, [])  # a new process
    new = int(text(await notes.call_tool("pid", {})))
    assert new != pid and alive(new)
    await stdio_pool.close()
    assert not alive(new)
    assert stdio_pool.health()["notes"]["state"] == "closed"


async def test_http_down_reconnects() -> None:
    proc, port = start_http()
    pool = McpPool([McpConfig.from_entry(http_entry(port, timeout_s=2))], ping_s=0.3)
    try:
        await pool.start()
        web = pool.servers["web"]
        assert text(await web.call_tool("add_note", {"text": "x"})) == "noted #1: x"
        stop(proc)
        await until(pool, ["web"])
        assert "web" in pool.health() and pool.health()["web"]["state"] == "down"
        t0 = time.monotonic()
        with pytest.raises(McpUnavailable, match="'web' is unavailable"):
            await web.call_tool("list_notes", {})
        assert time.monotonic() - t0 < 1  # down: no wait at all
        assert {t.name for t in await web.list_tools()} >= {"add_note"}  # still offered
        proc, _ = start_http(port)
        await until(pool, [])
        assert text(await web.call_tool("list_notes", {})) == "no notes"  # a new process
    finally:
        await pool.close()
        stop(proc)


async def test_down_at_start_is_retried() -> None:
    proc, port = start_http()
    stop(proc)  # a port nobody listens on now
    pool = McpPool([McpConfig.from_entry(http_entry(port))], ping_s=0.3)
    try:
        await pool.start()
        assert pool.dead() == ["web"] and pool.health()["web"]["failures"] >= 1
        assert await pool.servers["web"].list_tools() == []
        proc, _ = start_http(port)
        await until(pool, [])
    finally:
        await pool.close()
        stop(proc)


@pytest.mark.parametrize("concurrent", [False, True])
async def test_http_calls_one_at_a_time_unless_concurrent(concurrent: bool) -> None:
    """The SDK sends one HTTP server's requests one at a time by default (``concurrent``
    off); on, concurrent turns' calls overlap. Pins the SDK switch sessions/mcp.py sets."""
    proc, port = start_http()
    pool = McpPool([McpConfig.from_entry(http_entry(port, concurrent=concurrent))])
    try:
        await pool.start()
        web = pool.servers["web"]
        t0 = time.monotonic()
        done = await asyncio.gather(*[web.call_tool("slow", {"seconds": 1}) for _ in range(4)])
        took = time.monotonic() - t0
        assert [text(r) for r in done] == ["slept 1 s"] * 4
        assert (took < 3) if concurrent else (took >= 4)
    finally:
        await pool.close()
        stop(proc)
