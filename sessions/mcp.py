"""MCP servers for agents, through the Agents SDK's MCP support.

The agent registry declares them (``[[agents.mcp]]``: ``command`` + ``args`` (+ ``env``,
``cwd``) for stdio, or ``url`` (+ ``headers``) for streamable HTTP). A worker holds one
:class:`McpPool`: it connects every server once at start, shares it with every turn of the
agent (each agent holds a stable :class:`PooledServer` in ``Agent.mcp_servers``; the worker's
per-run shallow copy of the agent keeps the same list), pings it every ``ping_s`` seconds,
reconnects a failed one with backoff, and closes them all at shutdown (a stdio server's
process is ended then, docs/agents.md "MCP servers").

A turn never waits on a dead server: the tool list is the one read at the last connect (no
round trip per turn), and calling a tool of a server that is down, or one that does not
answer within the entry's ``timeout_s``, is a tool error the model sees (``MCP server
'notes' is unavailable; try again later``), not a failed turn. One connection, opened and
closed in its supervisor task: the SDK's MCP transports are anyio task groups, which must
be left by the task that entered them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from agents import Agent
from agents.exceptions import UserError
from agents.mcp import (
    MCPServer,
    MCPServerStdio,
    MCPServerStdioParams,
    MCPServerStreamableHttp,
    MCPServerStreamableHttpParams,
)
from agents.run_context import RunContextWrapper
from agents.tool import default_tool_error_function
from mcp.shared.exceptions import MCPError
from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from agentia import metrics as M

log = logging.getLogger("agentia.mcp")

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")
CONNECT_TIMEOUT_S = 10.0
"""Connecting (starting a stdio server's process, the MCP handshake, its tool list)."""
PING_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 5.0
"""Per server at shutdown; a stdio server's process is terminated, then killed, within it."""
BACKOFF_S = 0.5
BACKOFF_MAX_S = 30.0
"""Reconnect attempts after a failure: 0.5, 1, 2, ... s, then every 30 s, forever."""
DEFAULT_TIMEOUT_S = 30.0
"""A tool call's bound (``timeout_s`` per entry)."""

UP, DOWN, CONNECTING, CLOSED = "up", "down", "connecting", "closed"


class McpUnavailable(UserError):
    """A tool call that could not reach its server (down, or no answer in time). Its text is
    what the model sees as the tool's output."""


def tool_error(ctx: RunContextWrapper[Any], error: Exception) -> str:
    """The tool output the model gets for a failed MCP call: ours say why (no secrets in
    them); anything else gets the SDK's fixed text."""
    if isinstance(error, McpUnavailable):
        return str(error)
    cause = error.__cause__ or error.__context__
    if isinstance(cause, McpUnavailable):
        return str(cause)
    return default_tool_error_function(ctx, error)


@dataclass(frozen=True, slots=True)
class McpConfig:
    """One ``[[agents.mcp]]`` entry, checked."""

    name: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S
    concurrent: bool = False
    """HTTP: send concurrent turns' requests at once. Off, the SDK sends them one at a time
    (some servers mix up concurrent requests of one session), so a slow call delays the
    others and ``timeout_s`` counts that wait."""

    @classmethod
    def from_entry(cls, raw: Mapping[str, Any]) -> McpConfig:
        """Check a raw registry entry; a ``ValueError`` names the entry and what is wrong."""
        name = raw.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise ValueError(f"MCP server name must match {NAME.pattern[:-2]}, got {name!r}")
        unknown = set(raw) - {"name", "command", "args", "env", "cwd", "url", "headers",
                              "timeout_s", "concurrent"}
        if unknown:
            raise ValueError(f"MCP server {name}: unknown keys {sorted(unknown)}")
        command, url = raw.get("command", ""), raw.get("url", "")
        if not isinstance(command, str) or not isinstance(url, str) or bool(command) == bool(url):
            raise ValueError(f"MCP server {name}: give either command (stdio) or url (HTTP)")
        if url and not url.startswith(("http://", "https://")):
            raise ValueError(f"MCP server {name}: url must start with http:// or https://")
        if not command and any(k in raw for k in ("args", "env", "cwd")):
            raise ValueError(f"MCP server {name}: args, env and cwd are for command (stdio)")
        concurrent = raw.get("concurrent", False)
        if not isinstance(concurrent, bool) or (concurrent and not url):
            raise ValueError(f"MCP server {name}: concurrent is true or false, for url (HTTP)")
        timeout = raw.get("timeout_s", DEFAULT_TIMEOUT_S)
        if not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
            raise ValueError(f"MCP server {name}: timeout_s must be in (0, 3600]")
        return cls(name=name, command=command, args=tuple(_strs(raw, "args", list)),
                   env=_strs(raw, "env", dict) if "env" in raw else None,
                   cwd=_str_or_none(raw, "cwd"), url=url, headers=_strs(raw, "headers", dict),
                   timeout_s=float(timeout), concurrent=concurrent)

    def connection(self) -> MCPServerStdio | MCPServerStreamableHttp:
        """A new SDK server object (one per connection: a closed one is not reused)."""
        # the session's own read timeout is a backstop behind the call's (McpUnavailable)
        common: dict[str, Any] = {"name": self.name, "cache_tools_list": True,
                                  "client_session_timeout_seconds": self.timeout_s + 5}
        if self.command:
            params = MCPServerStdioParams(command=self.command, args=list(self.args))
            if self.env is not None:
                params["env"] = dict(self.env)
            if self.cwd:
                params["cwd"] = self.cwd
            return MCPServerStdio(params, **common)
        http = MCPServerStreamableHttp(MCPServerStreamableHttpParams(
            url=self.url, headers=dict(self.headers), timeout=self.timeout_s,
            sse_read_timeout=self.timeout_s + 5), **common)
        # the SDK's switch (openai-agents 0.24; tests/integration/test_mcp_pool.py pins it)
        http._serialize_session_requests = not self.concurrent
        return http


def _strs(raw: Mapping[str, Any], key: str, kind: type) -> Any:
    value = raw.get(key, kind())
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else None
    if not isinstance(value, kind) or items is None \
            or not all(isinstance(k, str | int) and isinstance(v, str) for k, v in items):
        raise ValueError(f"MCP server {raw.get('name')}: {key} must be a {kind.__name__} "
                         "of strings")
    return value


def _str_or_none(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"MCP server {raw.get('name')}: {key} must be a string")
    return value


class PooledServer(MCPServer):
    """What an agent holds for one configured server: stable for the worker's life, while the
    connection behind it is replaced on reconnect. The pool connects and closes it, so the
    SDK-facing ``connect``/``cleanup`` do nothing."""

    def __init__(self, cfg: McpConfig) -> None:
        super().__init__(failure_error_function=tool_error)
        self.cfg = cfg
        self.live: MCPServerStdio | MCPServerStreamableHttp | None = None
        self.tools: list[Any] = []
        """The tool list read at the last connect (offered while down: calls say why)."""
        self.state = CONNECTING
        self.error = ""
        self.failures = 0
        """Failed connects or pings in a row."""
        self.wake = asyncio.Event()
        """Set by a failed call (probe now) and at shutdown."""
        self.tried = asyncio.Event()
        """Set once the first connect is over (either way)."""

    @property
    def name(self) -> str:
        return self.cfg.name

    async def connect(self) -> None:
        """The pool connects (at worker start)."""

    async def cleanup(self) -> None:
        """The pool closes (at worker shutdown)."""

    async def list_tools(self, run_context: RunContextWrapper[Any] | None = None,
                         agent: Any = None) -> list[Any]:
        return list(self.tools)

    async def call_tool(self, tool_name: str, arguments: dict[str, Any] | None,
                        meta: dict[str, Any] | None = None) -> Any:
        live = self.live
        if live is None or self.state != UP:
            M.MCP_FAILURES.labels(self.name, "call_down").inc()
            raise McpUnavailable(f"MCP server {self.name!r} is unavailable; try again later")
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                return await live.call_tool(tool_name, arguments, meta=meta)
        except MCPError as exc:
            if exc.code not in (CONNECTION_CLOSED, REQUEST_TIMEOUT):
                raise  # the server answered (an unknown tool, bad arguments): it is alive
            self.wake.set()
            M.MCP_FAILURES.labels(self.name, "call_broken").inc()
            raise McpUnavailable(f"MCP server {self.name!r} is unavailable; try again "
                                 "later") from exc
        except TimeoutError:
            self.wake.set()  # slow or gone: the supervisor probes now
            M.MCP_FAILURES.labels(self.name, "call_timeout").inc()
            raise McpUnavailable(f"MCP tool {tool_name!r} on server {self.name!r} did not "
                                 f"answer within {self.cfg.timeout_s:g} s") from None
        except Exception as exc:
            self.wake.set()
            M.MCP_FAILURES.labels(self.name, "call_broken").inc()
            raise McpUnavailable(f"MCP server {self.name!r} is unavailable; try again "
                                 "later") from exc

    async def list_prompts(self) -> Any:
        if self.live is None:
            raise McpUnavailable(f"MCP server {self.name!r} is unavailable")
        return await self.live.list_prompts()

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        if self.live is None:
            raise McpUnavailable(f"MCP server {self.name!r} is unavailable")
        return await self.live.get_prompt(name, arguments)


def describe(exc: BaseException) -> str:
    """One line about a failure (the first leaf of an exception group), without URLs' secrets:
    the SDK's messages name the server, not its address."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def should_log(failures: int) -> bool:
    """Failures in a row that are logged: 1, 2, 4, 8, ... (a server down for a day writes
    a few dozen lines, not one per attempt)."""
    return failures & (failures - 1) == 0


class McpPool:
    """A worker's MCP servers: connected at start, kept alive, closed at shutdown."""

    def __init__(self, configs: Sequence[McpConfig], ping_s: float = 10.0) -> None:
        self.servers: dict[str, PooledServer] = {}
        for cfg in configs:
            known = self.servers.get(cfg.name)
            if known is not None and known.cfg != cfg:
                raise ValueError(f"two different MCP servers are named {cfg.name!r}")
            self.servers.setdefault(cfg.name, PooledServer(cfg))
        self.ping_s = ping_s
        self.stopping = False
        self.tasks: list[asyncio.Task[None]] = []

    def attach(self, agent: Agent[Any], configs: Sequence[McpConfig]) -> Agent[Any]:
        """A copy of ``agent`` that also has these servers (after any it declares itself): a
        copy, since two registrations may name one Agent object with different servers."""
        return agent.clone(mcp_servers=[*agent.mcp_servers,
                                         *(self.servers[c.name] for c in configs)])

    async def start(self, wait_s: float = CONNECT_TIMEOUT_S + 1) -> None:
        """Start every server's supervisor; return once each first attempt is over (a server
        down at start is retried in the background, and ``/readyz`` names it)."""
        for name in self.servers:
            M.MCP_DOWN.labels(name).set(1)  # until connected, as /readyz says
        self.tasks = [asyncio.create_task(self._supervise(s), name=f"mcp-{s.name}")
                      for s in self.servers.values()]
        firsts = [asyncio.create_task(s.tried.wait()) for s in self.servers.values()]
        if firsts:
            await asyncio.wait(firsts, timeout=wait_s)
        for t in firsts:
            t.cancel()

    def dead(self) -> list[str]:
        """Servers not connected now, by name."""
        return sorted(n for n, s in self.servers.items() if s.state != UP)

    def health(self) -> dict[str, dict[str, Any]]:
        return {n: {"state": s.state, "error": s.error, "failures": s.failures}
                for n, s in self.servers.items()}

    async def close(self) -> None:
        """Close every connection (stdio processes end) within ``CLOSE_TIMEOUT_S`` or so."""
        self.stopping = True
        for s in self.servers.values():
            s.wake.set()
        if not self.tasks:
            return
        _, late = await asyncio.wait(self.tasks, timeout=CONNECT_TIMEOUT_S + CLOSE_TIMEOUT_S)
        for t in late:  # stuck in a connect: cancelling ends it (and its process)
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _supervise(self, s: PooledServer) -> None:
        while not self.stopping:
            live = s.cfg.connection()
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await live.connect()  # type: ignore[no-untyped-call]
                    s.tools = await live.list_tools()
                self._up(s, live)
                await self._watch(s, live)
            except Exception as exc:
                self._down(s, exc)
            finally:
                s.live = None
                await self._close(s, live)
            if not self.stopping:
                await self._pause(s, min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (s.failures - 1)))
        s.state = CLOSED

    def _up(self, s: PooledServer, live: MCPServerStdio | MCPServerStreamableHttp) -> None:
        s.live, s.state, s.error = live, UP, ""
        s.tried.set()
        M.MCP_DOWN.labels(s.name).set(0)
        if s.failures:
            log.info("MCP server %s reconnected after %d failures (%d tools)", s.name,
                     s.failures, len(s.tools))
        else:
            log.info("MCP server %s connected (%d tools)", s.name, len(s.tools))
        s.failures = 0

    def _down(self, s: PooledServer, exc: BaseException) -> None:
        s.failures += 1
        s.state, s.error = DOWN, describe(exc)
        s.tried.set()
        M.MCP_DOWN.labels(s.name).set(1)
        M.MCP_FAILURES.labels(s.name, "connect" if s.live is None else "probe").inc()
        if should_log(s.failures):
            log.warning("MCP server %s is down (%d failures in a row): %s; reconnecting",
                        s.name, s.failures, s.error)

    async def _watch(self, s: PooledServer, live: MCPServerStdio | MCPServerStreamableHttp
                     ) -> None:
        """Probe every ``ping_s`` (or at once after a failed call) until a probe fails
        (raises) or the pool closes (returns). The probe reads the tool list (keeping it
        fresh): MCP's ``ping`` is optional, and servers of the ``mcp`` 2.x package answer it
        "method not found"."""
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(s.wake.wait(), self.ping_s)
            s.wake.clear()
            if self.stopping:
                return
            if live.session is None:
                raise ConnectionError("no session")
            async with asyncio.timeout(PING_TIMEOUT_S):
                s.tools = list((await live.session.list_tools()).tools)

    async def _close(self, s: PooledServer, live: MCPServerStdio | MCPServerStreamableHttp
                     ) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await live.cleanup()  # type: ignore[no-untyped-call]
        except Exception as exc:  # a dead transport often fails to close: it is gone anyway
            log.debug("closing MCP server %s: %s", s.name, describe(exc))

    async def _pause(self, s: PooledServer, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(s.wake.wait(), seconds)
        s.wake.clear()


def configs_of(specs: Sequence[Any]) -> dict[str, list[McpConfig]]:
    """Each registered agent's MCP servers (``AgentSpec.mcp``, sessions/registry.py), checked;
    a ``ValueError`` names the agent."""
    out: dict[str, list[McpConfig]] = {}
    for spec in specs:
        try:
            out[spec.name] = [McpConfig.from_entry(m) for m in spec.mcp]
        except ValueError as exc:
            raise ValueError(f"agent {spec.name}: {exc}") from None
    return out


async def tools_of(agent: Agent[Any], private: frozenset[str]) -> list[dict[str, Any]]:
    """The MCP tools ``agent`` offers now, as the registry publishes tools (name as the model
    sees it, description, private). A server not connected yet offers none."""
    try:
        tools = await agent.get_mcp_tools(RunContextWrapper(context=None))
    except Exception as exc:  # e.g. two servers offer one name: every turn will say so too
        log.error("agent %s: its MCP tools cannot be listed: %s", agent.name, describe(exc))
        return []
    return [{"name": t.name, "description": str(getattr(t, "description", "") or ""),
             "private": t.name in private} for t in tools]
