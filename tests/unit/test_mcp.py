"""sessions/mcp.py without servers: entries checked, bounded logs, errors the model sees."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agents import Agent

from sessions.mcp import (
    McpConfig,
    McpPool,
    McpUnavailable,
    configs_of,
    describe,
    should_log,
    tool_error,
    tools_of,
)
from sessions.probes import worker_readiness


def test_entries() -> None:
    c = McpConfig.from_entry({"name": "notes", "command": "python", "args": ["-m", "x"],
                              "env": {"A": "1"}, "cwd": "/tmp", "timeout_s": 5})
    assert (c.command, c.args, c.env, c.cwd, c.timeout_s) == ("python", ("-m", "x"),
                                                              {"A": "1"}, "/tmp", 5.0)
    assert type(c.connection()).__name__ == "MCPServerStdio"
    h = McpConfig.from_entry({"name": "web", "url": "https://mcp.example/mcp",
                              "headers": {"Authorization": "Bearer t"}})
    assert type(h.connection()).__name__ == "MCPServerStreamableHttp"
    assert h.timeout_s == 30.0


@pytest.mark.parametrize(("entry", "why"), [
    ({"name": "Bad Name", "command": "x"}, "must match"),
    ({"name": "a"}, "either command"),
    ({"name": "a", "command": "x", "url": "http://h"}, "either command"),
    ({"name": "a", "url": "ftp://h"}, "http://"),
    ({"name": "a", "url": "http://h", "args": ["x"]}, "are for command"),
    ({"name": "a", "command": "x", "args": "-m x"}, "args must be a list"),
    ({"name": "a", "command": "x", "env": {"A": 1}}, "env must be a dict"),
    ({"name": "a", "command": "x", "timeout_s": 0}, "timeout_s"),
    ({"name": "a", "command": "x", "shell": True}, "unknown keys"),
    ({"name": "a", "command": "x", "concurrent": True}, "concurrent"),
    ({"name": "a", "url": "http://h", "concurrent": "yes"}, "concurrent"),
])
def test_bad_entries(entry: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        McpConfig.from_entry(entry)


def test_pool_shares_a_name_only_for_the_same_server() -> None:
    a = McpConfig.from_entry({"name": "notes", "command": "x"})
    pool = McpPool([a, a])
    agent: Agent[Any] = Agent(name="t")
    given = pool.attach(agent, [a])
    assert [s.name for s in given.mcp_servers] == ["notes"] and agent.mcp_servers == []
    assert pool.dead() == ["notes"]  # not started: connecting
    with pytest.raises(ValueError, match="two different"):
        McpPool([a, McpConfig.from_entry({"name": "notes", "command": "y"})])


def test_logs_are_bounded() -> None:
    assert [n for n in range(1, 100) if should_log(n)] == [1, 2, 4, 8, 16, 32, 64]


def test_errors() -> None:
    group = ExceptionGroup("x", [ConnectionError("refused\nmore")])
    assert describe(group) == "ConnectionError: refused"
    down = McpUnavailable("MCP server 'notes' is unavailable; try again later")
    assert tool_error(None, down) == str(down)  # type: ignore[arg-type]
    wrapped = RuntimeError("x")
    wrapped.__cause__ = down
    assert tool_error(None, wrapped) == str(down)  # type: ignore[arg-type]
    assert "error occurred" in tool_error(None, RuntimeError("secret"))  # type: ignore[arg-type]


class FakeRedis:
    def __init__(self) -> None:
        self.ok = True

    async def ping(self) -> bool:
        if not self.ok:
            raise ConnectionError("refused")
        return True


async def test_worker_readiness() -> None:
    pool = McpPool([McpConfig.from_entry({"name": "notes", "command": "x"})])
    redis, stopping = FakeRedis(), asyncio.Event()
    ready = worker_readiness(pool, redis, stopping)
    assert await ready() == (503, "mcp server down: notes (connecting)\n")
    pool.servers["notes"].state = "up"
    assert await ready() == (200, "ready\n")
    redis.ok = False
    stopping.set()
    assert await ready() == (503, "stopping\nredis unreachable\n")


async def test_configs_and_published_tools() -> None:
    from types import SimpleNamespace

    from mcp.types import Tool as MCPTool

    spec = SimpleNamespace(name="helper", mcp=[{"name": "notes", "command": "x"}])
    configs = configs_of([spec])
    assert [c.name for c in configs["helper"]] == ["notes"]
    with pytest.raises(ValueError, match="agent bad: MCP server a"):
        configs_of([SimpleNamespace(name="bad", mcp=[{"name": "a"}])])
    pool = McpPool(configs["helper"])
    agent = pool.attach(Agent(name="t"), configs["helper"])
    assert await tools_of(agent, frozenset()) == []  # not connected: no tools known
    pool.servers["notes"].tools = [MCPTool(name="add_note", description="Keep a note.",
                                           input_schema={"type": "object"})]
    assert await tools_of(agent, frozenset({"add_note"})) == [
        {"name": "add_note", "description": "Keep a note.", "private": True}]


async def test_published_tools_when_names_clash() -> None:
    from mcp.types import Tool as MCPTool

    configs = [McpConfig.from_entry({"name": n, "command": "x"}) for n in ("a", "b")]
    pool = McpPool(configs)
    for s in pool.servers.values():
        s.tools = [MCPTool(name="same", input_schema={"type": "object"})]
    assert await tools_of(pool.attach(Agent(name="t"), configs), frozenset()) == []


def test_worker_refuses_a_bad_mcp_entry_at_start(tmp_path: Any) -> None:
    from agentia.settings import WorkerSettings, from_env
    from sessions.main import prepare
    from sessions.registry import RegistryError

    path = tmp_path / "agents.toml"
    path.write_text('[[agents]]\nname = "notes"\nagent = "tests.mcp_servers.agents:notes_agent"\n'
                    '[[agents.mcp]]\nname = "notes"\ncommand = "x"\ntimeout_s = "soon"\n')
    with pytest.raises(RegistryError, match="agent notes: MCP server notes: timeout_s"):
        prepare(from_env(WorkerSettings, agents=str(path)))
    path.write_text(path.read_text().replace('timeout_s = "soon"', "timeout_s = 5"))
    agents, _, default, pool = prepare(from_env(WorkerSettings, agents=str(path)))
    assert [s.name for s in agents["notes"][0].mcp_servers] == ["notes"]
    assert default and pool.servers["notes"].cfg.timeout_s == 5
