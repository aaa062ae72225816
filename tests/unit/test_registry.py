"""The agent registry's configuration: flags, TOML, MCP tables, errors (sessions/registry.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentia.settings import SettingsError
from sessions import registry as R
from sessions.registry import AgentSpec, RegistryError

GOOD = """
[[agents]]
name = "demo"
agent = "sessions.demo:demo_agent"
description = "the demo"
private_tools = ["lookup_account"]

[[agents.mcp]]
name = "notes"
command = "python"
args = ["-m", "tests.mcp_servers.notes"]
env = {A = "1"}

[[agents.mcp]]
name = "web"
url = "http://127.0.0.1:9000/mcp"
headers = {Authorization = "Bearer x"}

[[agents]]
name = "triage"
agent = "sessions.demo:triage_agent"
"""


def test_flag_with_name_and_bare() -> None:
    assert R.parse_flag("triage=pkg.mod:make") == AgentSpec("triage", "pkg.mod:make")
    assert R.parse_flag("pkg.mod:agent") == AgentSpec("default", "pkg.mod:agent")


@pytest.mark.parametrize("bad", ["Demo=pkg:a", "x=pkg", "=pkg:a", "a b=pkg:a", "pkg:",
                                 "x=pkg:a:b", "-x=pkg:a", "a" * 33 + "=pkg:a"])
def test_bad_flags(bad: str) -> None:
    with pytest.raises(RegistryError):
        R.parse_flag(bad)


def test_toml_in_order_with_mcp() -> None:
    demo, triage = R.parse_toml(GOOD)
    assert (demo.name, demo.agent_ref, demo.description) == (
        "demo", "sessions.demo:demo_agent", "the demo")
    assert demo.private_tools == frozenset({"lookup_account"})
    assert [m["name"] for m in demo.mcp] == ["notes", "web"]
    assert demo.mcp[0]["args"] == ["-m", "tests.mcp_servers.notes"]
    assert demo.mcp[1]["headers"] == {"Authorization": "Bearer x"}
    assert (triage.name, triage.mcp, triage.private_tools) == ("triage", [], frozenset())


def _one(body: str) -> str:
    return '[[agents]]\nname = "a"\nagent = "m:x"\n' + body


@pytest.mark.parametrize(("doc", "says"), [
    ("name = ", "not valid TOML"),
    ("[other]\nx = 1", "unknown top-level"),
    ("", "no [[agents]]"),
    ('[[agents]]\nname = "A"\nagent = "m:x"', "must match"),
    ('[[agents]]\nname = "a"\nagent = "m"', "package.module:name"),
    ('[[agents]]\nname = "a"', "package.module:name"),
    ('[[agents]]\nname = "a"\nagent = "m:x"\nmodel = "x"', "unknown key"),
    (_one('private_tools = "x"'), "private_tools"),
    (_one("description = 3"), "description"),
    (_one('[[agents]]\nname = "a"\nagent = "m:y"'), "registered twice"),
    (_one('[[agents.mcp]]\nname = "n"'), "exactly one of command"),
    (_one('[[agents.mcp]]\nname = "n"\ncommand = "p"\nurl = "http://h"'), "exactly one"),
    (_one('[[agents.mcp]]\nname = "n"\nurl = "ftp://h"'), "http://"),
    (_one('[[agents.mcp]]\nname = "n"\nurl = "http://h"\nargs = ["x"]'), "do not go with"),
    (_one('[[agents.mcp]]\nname = "n"\ncommand = "p"\nheaders = {a = "b"}'), "do not go"),
    (_one('[[agents.mcp]]\nname = "n"\ncommand = "p"\nargs = [1]'), "args"),
    (_one('[[agents.mcp]]\nname = "n"\ncommand = "p"\nenv = {a = 1}'), "env"),
    (_one('[[agents.mcp]]\nname = "n"\ncommand = ""'), "non-empty"),
    (_one('[[agents.mcp]]\nname = "n"\ncommand = "p"\ntimeout = 3'), "unknown key"),
    (_one('[[agents.mcp]]\ncommand = "p"'), "name"),
    (_one('[[agents.mcp]]\nname = "n"\ncommand = "p"\n[[agents.mcp]]\nname = "n"\n'
          'command = "q"'), "share a name"),
    (_one('[[agents.a2a]]\nname = "p"'), "url must start"),
    (_one('[[agents.a2a]]\nname = "p"\nurl = "ftp://h"'), "url must start"),
    (_one('[[agents.a2a]]\nurl = "http://h"'), "name"),
    (_one('[[agents.a2a]]\nname = "p"\nurl = "http://h"\ntoken = 3'), "token"),
    (_one('[[agents.a2a]]\nname = "p"\nurl = "http://h"\ntimeout_s = 0'), "timeout_s"),
    (_one('[[agents.a2a]]\nname = "p"\nurl = "http://h"\nheaders = {}'), "unknown key"),
    (_one('a2a = 1'), "[[agents.a2a]]"),
    (_one('[[agents.a2a]]\nname = "p"\nurl = "http://h"\n[[agents.a2a]]\nname = "p"\n'
          'url = "http://i"'), "share a name"),
])
def test_bad_toml(doc: str, says: str) -> None:
    with pytest.raises(RegistryError) as err:
        R.parse_toml(doc, "agents.toml")
    assert says in str(err.value) and "agents.toml" in str(err.value)
    assert isinstance(err.value, SettingsError)  # the CLI prints these and exits 2


def test_from_config_file_then_flags_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(GOOD)
    specs = R.from_config(["extra=pkg.mod:a"], str(path))
    assert [s.name for s in specs] == ["demo", "triage", "extra"]
    with pytest.raises(RegistryError, match="twice"):
        R.from_config(["demo=pkg.mod:a"], str(path))
    with pytest.raises(RegistryError, match="agents file"):
        R.from_config([], str(path) + ".missing")


def test_default_is_the_demo_setup() -> None:
    specs = R.from_config([], "")
    assert [s.name for s in specs] == ["demo", "triage"]  # demo first: the default
    assert [s.agent_ref for s in specs] == ["sessions.demo:demo_agent",
                                            "sessions.demo:triage_agent"]


def test_select_only() -> None:
    specs = R.parse_toml(GOOD)
    assert [s.name for s in R.select(specs, ["triage"])] == ["triage"]
    assert [s.name for s in R.select(specs, [])] == ["demo", "triage"]
    with pytest.raises(RegistryError, match="not registered"):
        R.select(specs, ["nope"])


def test_describe_marks_private_tools() -> None:
    from sessions.demo import demo_agent

    spec = AgentSpec("demo", "sessions.demo:demo_agent", "d", frozenset({"calculate"}))
    info = R.describe(spec, demo_agent, 0)
    tools = {t["name"]: t for t in info["tools"]}
    assert tools["calculate"]["private"] and not tools["current_time"]["private"]
    assert "arithmetic" in tools["calculate"]["description"]
    assert (info["name"], info["description"], info["order"]) == ("demo", "d", 0)


@pytest.mark.parametrize(("args", "says"), [
    (["--agent", "Bad=pkg.mod:a"], "agent name 'Bad' must match"),
    (["--agent", "x=tests.no_such_module:a"], "agent x: cannot load tests.no_such_module:a"),
    (["--agent", "x=tests.agents_fixtures:FailingModel"], "not an agents.Agent"),
    (["--agents", "/nonexistent/agents.toml"], "agents file /nonexistent/agents.toml"),
    (["--agent", "x=tests.agents_fixtures:fast", "--only", "y"], "--only ['y']: not registered"),
])
def test_the_worker_refuses_a_bad_registry_with_one_line(args: list[str], says: str) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT, _popen

    env = {**os.environ, "AGENTIA_REDIS_URL": "redis://127.0.0.1:1/0"}  # never reached
    # forked by the tests' zygote (the SDK imported once: a plain start took 35-60 s of a
    # busy box, past the timeout); tests/unit/test_zygote.py checks a fork exits as a plain one
    popen = _popen(["worker", *args], env, (), True)
    p = popen([sys.executable, "-m", "launch.cli", "worker", *args], env=env, cwd=str(ROOT),
              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, raw = p.communicate(timeout=60)
    stderr = raw.decode()
    assert p.returncode == 2, stderr
    assert stderr.startswith("agentia: configuration error: ") and says in stderr
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1


def test_agentia_chat_asks_for_the_agent_in_the_url() -> None:
    from launch.chat import with_agent

    assert with_agent("ws://h:1/v1/ws", None) == "ws://h:1/v1/ws"
    assert with_agent("ws://h:1/v1/ws", "triage") == "ws://h:1/v1/ws?agent=triage"
    assert with_agent("ws://h:1/v1/ws?token=t&agent=x", "demo") == (
        "ws://h:1/v1/ws?token=t&agent=demo")


def test_a2a_peers_are_kept() -> None:
    [spec] = R.parse_toml(_one('[[agents.a2a]]\nname = "peer"\nurl = "https://h/a2a"\n'
                               'token = "t"\ntimeout_s = 5'))
    assert spec.a2a == [{"name": "peer", "url": "https://h/a2a", "token": "t", "timeout_s": 5}]
