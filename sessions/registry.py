"""The agent registry: which agents a deployment runs, from ``--agent`` flags or a TOML file.

``--agent NAME=pkg.module:attr`` (repeatable; the bare ``pkg.module:attr`` form names the
agent ``default``) and ``--agents FILE`` / ``AGENTIA_AGENTS`` (docs/agents.md)::

    [[agents]]
    name = "demo"                       # [a-z0-9][a-z0-9_-]{0,31}
    agent = "sessions.demo:demo_agent"  # module:attr of an agents.Agent (or a callable)
    description = "..."                 # optional
    private_tools = ["lookup_account"]  # optional: clients see only these tools' names
    [[agents.mcp]]                      # optional: MCP servers (stdio or streamable HTTP)
    name = "notes"
    command = "python"
    args = ["-m", "tests.mcp_servers.notes"]
    [[agents.a2a]]                      # optional: remote A2A agents as tools (docs/a2a.md)
    name = "peer"                       # the tool's name
    url = "https://other.example.com/a2a/demo"  # the remote agent (its card's base URL)
    token = "..."                       # optional: sent as Authorization: Bearer

Parsing is pure (no import of the agents themselves) and every mistake is a
:class:`RegistryError` (a :class:`~agentia.settings.SettingsError`: ``agentia`` prints it and
exits 2). The first agent is the deployment's default (a session that names none gets it).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentia.settings import SettingsError
from sessions.keys import AGENT_NAME_RE, DEFAULT_AGENT

NAME_RE = AGENT_NAME_RE
"""An agent's (and an MCP server's) name; use with fullmatch."""
NAME_RULE = "[a-z0-9][a-z0-9_-]{0,31}"
DEFAULT_NAME = DEFAULT_AGENT
"""The name of an agent given as a bare ``pkg.module:attr`` (the pre-registry form); its turn
streams keep the pre-registry key names (sessions/keys.py), so such a deployment upgrades
without draining."""
REF_RE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
MAX_AGENTS = 64
"""Agents one deployment may register (each has its own turn streams)."""
AGENT_KEYS = frozenset({"name", "agent", "description", "private_tools", "mcp", "a2a"})
A2A_KEYS = frozenset({"name", "url", "token", "description", "timeout_s"})
MCP_KEYS = frozenset({"name", "command", "args", "env", "cwd", "url", "headers", "timeout_s",
                      "concurrent"})
DEMO_AGENTS = (("demo", "sessions.demo:demo_agent",
                "The demo assistant: time, arithmetic and table bookings."),
               ("triage", "sessions.demo:triage_agent",
                "Greets you and hands everything else to the demo agent."))


class RegistryError(SettingsError):
    """The agent registry's configuration is wrong (the message says where and why)."""


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One registered agent, as configured (its object is loaded by the worker)."""

    name: str
    agent_ref: str
    """``pkg.module:attr`` of an ``agents.Agent`` or of a callable returning one."""
    description: str = ""
    private_tools: frozenset[str] = frozenset()
    """Tools whose arguments and output never reach clients (only their names)."""
    mcp: list[dict[str, Any]] = field(default_factory=list)
    """MCP servers, validated raw tables (keys of :data:`MCP_KEYS`; one of command/url)."""
    a2a: list[dict[str, Any]] = field(default_factory=list)
    """Remote A2A agents as tools, validated raw tables (keys of :data:`A2A_KEYS`)."""


def check_name(name: object, what: str = "agent name") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise RegistryError(f"{what} {name!r} must match {NAME_RULE}")
    return name


def check_ref(ref: object, where: str) -> str:
    if not isinstance(ref, str) or not REF_RE.fullmatch(ref):
        raise RegistryError(f"{where}: agent must look like 'package.module:name', got {ref!r}")
    return ref


def parse_flag(value: str) -> AgentSpec:
    """One ``--agent`` value: ``NAME=pkg.module:attr`` or the bare ``pkg.module:attr``."""
    name, sep, ref = value.strip().partition("=")
    if not sep:
        name, ref = DEFAULT_NAME, value.strip()
    where = f"--agent {value!r}"
    check_name(name.strip(), f"{where}: agent name")
    return AgentSpec(name.strip(), check_ref(ref.strip(), where))


def parse_toml(text: str, source: str = "agents file") -> list[AgentSpec]:
    """The ``[[agents]]`` tables of a TOML document, in order."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{source}: not valid TOML: {exc}") from None
    extra = set(doc) - {"agents"}
    if extra:
        raise RegistryError(f"{source}: unknown top-level key(s) {sorted(extra)}; "
                            "expected [[agents]] tables")
    tables = doc.get("agents")
    if not isinstance(tables, list) or not tables:
        raise RegistryError(f"{source}: no [[agents]] table")
    return check_unique([_agent_table(t, f"{source}: agents[{i}]")
                         for i, t in enumerate(tables)], source)


def load_file(path: str) -> list[AgentSpec]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise RegistryError(f"agents file {path}: {exc.strerror or exc}") from None
    return parse_toml(text, path)


def _agent_table(t: object, where: str) -> AgentSpec:
    if not isinstance(t, dict):
        raise RegistryError(f"{where}: must be a table")
    unknown = set(t) - AGENT_KEYS
    if unknown:
        raise RegistryError(f"{where}: unknown key(s) {sorted(unknown)}; "
                            f"allowed: {sorted(AGENT_KEYS)}")
    name = check_name(t.get("name"), f"{where}: name")
    where = f"{where} ({name})"
    desc = t.get("description", "")
    if not isinstance(desc, str):
        raise RegistryError(f"{where}: description must be a string")
    private = t.get("private_tools", [])
    if not isinstance(private, list) or not all(isinstance(p, str) and p for p in private):
        raise RegistryError(f"{where}: private_tools must be a list of tool names")
    mcp = t.get("mcp", [])
    if not isinstance(mcp, list):
        raise RegistryError(f"{where}: mcp must be [[agents.mcp]] tables")
    servers = [check_mcp(m, f"{where}: mcp[{i}]") for i, m in enumerate(mcp)]
    names = [s["name"] for s in servers]
    if len(set(names)) != len(names):
        raise RegistryError(f"{where}: two MCP servers share a name")
    remotes = t.get("a2a", [])
    if not isinstance(remotes, list):
        raise RegistryError(f"{where}: a2a must be [[agents.a2a]] tables")
    peers = [check_a2a(m, f"{where}: a2a[{i}]") for i, m in enumerate(remotes)]
    if len({p["name"] for p in peers}) != len(peers):
        raise RegistryError(f"{where}: two A2A agents share a name")
    return AgentSpec(name, check_ref(t.get("agent"), where), desc, frozenset(private), servers,
                     peers)


def check_a2a(m: object, where: str) -> dict[str, Any]:
    """One ``[[agents.a2a]]`` table, checked and copied (sessions/a2a_tools.py builds the
    tool)."""
    if not isinstance(m, dict):
        raise RegistryError(f"{where}: must be a table")
    unknown = set(m) - A2A_KEYS
    if unknown:
        raise RegistryError(f"{where}: unknown key(s) {sorted(unknown)}; "
                            f"allowed: {sorted(A2A_KEYS)}")
    check_name(m.get("name"), f"{where}: name")
    _strings(m, where, "url", "token", "description")
    if not str(m.get("url", "")).startswith(("http://", "https://")):
        raise RegistryError(f"{where}: url must start with http:// or https://")
    t = m.get("timeout_s", 120)
    if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 3600:
        raise RegistryError(f"{where}: timeout_s must be a number of seconds in (0, 3600]")
    return dict(m)


def check_mcp(m: object, where: str) -> dict[str, Any]:
    """One ``[[agents.mcp]]`` table, checked and copied (the MCP helper builds servers)."""
    if not isinstance(m, dict):
        raise RegistryError(f"{where}: must be a table")
    unknown = set(m) - MCP_KEYS
    if unknown:
        raise RegistryError(f"{where}: unknown key(s) {sorted(unknown)}; "
                            f"allowed: {sorted(MCP_KEYS)}")
    check_name(m.get("name"), f"{where}: name")
    if ("command" in m) == ("url" in m):
        raise RegistryError(f"{where}: give exactly one of command (stdio) or url (HTTP)")
    kind, other = (("command", ("url", "headers")) if "command" in m
                   else ("url", ("command", "args", "env", "cwd")))
    misplaced = [k for k in other if k in m]
    if misplaced:
        raise RegistryError(f"{where}: {misplaced} do not go with {kind}")
    _strings(m, where, "command", "url", "cwd")
    if "url" in m and not str(m["url"]).startswith(("http://", "https://")):
        raise RegistryError(f"{where}: url must start with http:// or https://")
    if "args" in m and not (isinstance(m["args"], list)
                            and all(isinstance(a, str) for a in m["args"])):
        raise RegistryError(f"{where}: args must be a list of strings")
    for key in ("env", "headers"):
        v = m.get(key, {})
        if not (isinstance(v, dict) and all(isinstance(x, str) for x in v.values())):
            raise RegistryError(f"{where}: {key} must be a table of strings")
    return dict(m)


def _strings(m: dict[str, Any], where: str, *keys: str) -> None:
    for key in keys:
        if key in m and (not isinstance(m[key], str) or not m[key]):
            raise RegistryError(f"{where}: {key} must be a non-empty string")


def check_unique(specs: list[AgentSpec], source: str = "agent registry") -> list[AgentSpec]:
    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise RegistryError(f"{source}: agent {s.name!r} is registered twice")
        seen.add(s.name)
    if len(specs) > MAX_AGENTS:
        raise RegistryError(f"{source}: at most {MAX_AGENTS} agents per deployment")
    return specs


def from_config(flags: Sequence[str], file: str = "") -> list[AgentSpec]:
    """The registry of a worker: the file's agents first, then the flags'. Neither given:
    the demo setup (:func:`demo_specs`)."""
    specs = load_file(file) if file else []
    specs += [parse_flag(f) for f in flags if f.strip()]
    return check_unique(specs) if specs else demo_specs()


def demo_specs() -> list[AgentSpec]:
    """``demo`` (first: the default) and ``triage`` (sessions/demo.py)."""
    return [AgentSpec(name, ref, desc) for name, ref, desc in DEMO_AGENTS]


def select(specs: list[AgentSpec], only: Iterable[str]) -> list[AgentSpec]:
    """The agents a worker runs: those named in ``only`` (all when empty)."""
    wanted = [o.strip() for o in only if o.strip()]
    known = {s.name for s in specs}
    missing = [w for w in wanted if w not in known]
    if missing:
        raise RegistryError(f"--only {missing}: not registered (registered: {sorted(known)})")
    return [s for s in specs if not wanted or s.name in wanted]


def describe(spec: AgentSpec, agent: Any, order: int) -> dict[str, Any]:
    """What the registry publishes of one agent (``GET /v1/agents``): its name, description,
    tools (name, description, private) and place. Duck-typed on the Agents SDK's ``Agent``
    (``tools`` with ``name`` and ``description``) so this module does not import the SDK."""
    tools = []
    for t in getattr(agent, "tools", None) or []:
        name = str(getattr(t, "name", "") or type(t).__name__)
        tools.append({"name": name, "description": str(getattr(t, "description", "") or ""),
                      "private": name in spec.private_tools})
    desc = spec.description or str(getattr(agent, "handoff_description", "") or "")
    return {"name": spec.name, "description": desc, "tools": tools, "order": order}
