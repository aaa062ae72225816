"""voice/server_load.py: livekit-agents' own availability rule (``_is_available``, the pinned
1.8.9 code, not a copy) with our load: a worker with a budget of 4 calls and none running takes
4 calls that arrive before any has started, not 1; then none more. The job pool is the one
piece stood in for (a worker that has not connected has none): its running jobs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from livekit.agents import AgentServer

from voice.server_load import CallCountServer
from voice.settings import VoiceSettings
from voice.worker import options

SETTINGS = VoiceSettings(livekit_url="ws://127.0.0.1:1", livekit_api_key="k",
                         livekit_api_secret="s" * 32, voice_max_calls=4)


def server(cls: type[AgentServer], running: int) -> Any:
    srv: Any = cls.from_server_options(options(SETTINGS))
    if isinstance(srv, CallCountServer):
        srv.calls = SETTINGS.voice_max_calls
    # what AgentServer.run() sets up: the mode and the job pool
    srv._devmode = False
    srv._proc_pool = SimpleNamespace(
        processes=[SimpleNamespace(running_job=object()) for _ in range(running)])
    srv._worker_load = min(1.0, running / SETTINGS.voice_max_calls)  # our load_fnc's value
    return srv


def takes(srv: Any) -> int:
    """How many calls arriving together it accepts (each reserves a slot until it starts)."""
    srv._reserved_slots = 0
    while srv._is_available():
        srv._reserved_slots += 1
    return int(srv._reserved_slots)


@pytest.mark.parametrize("running", [0, 1, 3, 4])
def test_calls_arriving_together_fill_the_budget(running: int) -> None:
    assert takes(server(CallCountServer, running)) == 4 - running


def test_livekit_agents_alone_took_one_call_when_none_was_running() -> None:
    assert takes(server(AgentServer, 0)) == 1  # the bug the subclass fixes
    assert takes(server(AgentServer, 1)) == 3  # with one running its estimate is right


def test_without_a_budget_livekit_agents_rule_is_kept() -> None:
    srv = server(CallCountServer, 0)
    srv.calls = 0
    assert takes(srv) == takes(server(AgentServer, 0))
