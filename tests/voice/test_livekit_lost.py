"""LiveKit killed mid-call (issue 16): the call ends ``livekit_lost`` with a ``call`` error, the
running turn is still answered, and the voice worker registers again once LiveKit is back;
``agentia up`` restarts the LiveKit server it started. Each test kills, by PID, a LiveKit
server it started itself."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml

from agentia.settings import DEV_SECRET
from gateway.auth import mint
from tests.conftest import Cluster
from tests.voice.conftest import agentia_up, stdout_line, voice_call
from tests.voice.livekit_server import LiveKitServer, find_binary
from tests.voice.test_call_errors import event
from voice.caller import speech_48k
from voice.settings import VoiceSettings
from voice.tokens import agent_in_room

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

LOST_WITHIN_S = 45
"""From the kill to ``ended``: the agent's room SDK first tries to reconnect for a while."""
BACK_WITHIN_S = 60
"""From LiveKit's restart to a call the voice worker takes (its retries wait up to 10 s)."""


@pytest.fixture
def own_livekit(tmp_path: Path) -> Iterator[LiveKitServer]:
    binary = find_binary()
    if binary is None:
        pytest.skip("no LiveKit server binary (go install "
                    "github.com/livekit/livekit-server/cmd/server@v1.13.5)")
    server = LiveKitServer(binary, tmp_path / "livekit").start()
    yield server
    server.stop()


async def test_a_killed_livekit_ends_the_call_and_the_worker_registers_again(
        cluster: Cluster, own_livekit: LiveKitServer) -> None:
    lk = own_livekit
    cluster.worker(agent="tests.agents_fixtures:slow", SLOW_DELAY="0.15")
    async with voice_call(cluster, lk, "erin", prefix="lost") as c:
        await c.joined.say(await speech_48k("tell me about the weather in paris tomorrow"))
        user = await c.chat.until("user", timeout=20, source="voice")
        await event(c.chat, "chunk", 20, turn=user["offset"])
        assert lk.proc is not None
        os.kill(lk.proc.pid, signal.SIGKILL)  # mid-turn; our own server, by PID
        lk.proc.wait(5)
        killed = time.monotonic()

        error = await event(c.chat, "call", LOST_WITHIN_S, state="error")
        assert (error["code"], error["message"]) == (
            "livekit_lost", "the LiveKit server was lost: start the call again")
        ended = await event(c.chat, "call", 10, state="ended")
        assert ended["reason"] == "livekit_lost"
        print(f"\nLiveKit killed -> call ended livekit_lost in {time.monotonic() - killed:.1f} s")
        # the turn was submitted before: the agent workers still answer it
        reply = await event(c.chat, "reply", 30, turn=user["offset"])
        assert reply["text"]

        await c.leave()
        lk.start()  # the same port and key pair, as agentia up restarts it
        restarted = time.monotonic()
        # LiveKit offers a room's job only when it is made: the worker must be back first
        while c.worker.text().count("registered worker") < 2:
            assert time.monotonic() - restarted < BACK_WITHIN_S, "the worker did not register"
            await asyncio.sleep(0.2)
        print(f"LiveKit back -> the voice worker registered in "
              f"{time.monotonic() - restarted:.1f} s")
        await c.join()  # a new call: only a registered voice worker can take it
        print(f"LiveKit back -> a new call taken and listening in "
              f"{time.monotonic() - restarted:.1f} s")
        assert time.monotonic() - restarted < BACK_WITHIN_S
    assert "Traceback" not in c.worker.text(), c.worker.log_path


def _post_call(api: str, session: str) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(
        f"{api}/v1/voice/sessions", data=orjson.dumps({"session": session}), method="POST",
        headers={"Authorization": f"Bearer {mint(DEV_SECRET, 'dev', 600)}",
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return int(r.status), orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), {}


def _call_taken(api: str, livekit: VoiceSettings, within: float = 20.0) -> bool:
    """A call started through the route, and whether its agent came into the room within
    ``within`` seconds (the route answers once the agent is dispatched, not once it joined)."""
    status, reply = _post_call(api, f"up-{uuid.uuid4().hex[:8]}")
    if status != 201:
        assert status == 503, status  # LiveKit not back yet
        return False
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if asyncio.run(agent_in_room(livekit, reply["room"])):
            return True
        time.sleep(0.2)
    return False


def _up_livekit(state_dir: Path) -> VoiceSettings:
    """How to reach ``agentia up``'s LiveKit server: its config in the state dir."""
    conf = yaml.safe_load((state_dir / "livekit" / "livekit.yaml").read_text())
    [(key, secret)] = conf["keys"].items()
    return VoiceSettings(livekit_url=f"ws://127.0.0.1:{conf['port']}", livekit_api_key=key,
                         livekit_api_secret=secret)


def test_agentia_up_restarts_its_livekit_and_calls_work_again(tmp_path: Path) -> None:
    if find_binary() is None:
        pytest.skip("no LiveKit server binary")
    with agentia_up(tmp_path, AGENTIA_VOICE_AGENT_NAME=f"agentia-voice-{uuid.uuid4().hex[:8]}"
                    ) as (up, info):
        assert info["voice"] == "on"
        livekit_pid = int(info["pids"].split(",")[-1])  # listed last (voice/livekit_server)
        livekit = _up_livekit(tmp_path)
        assert _call_taken(info["api"], livekit)
        os.kill(livekit_pid, signal.SIGKILL)
        killed = time.monotonic()
        line = stdout_line(up, b"AGENTIA_UP_RESTARTED kind=livekit", 30)
        assert int(line.split(b"pid=")[1].split()[0]) != livekit_pid
        deadline = time.monotonic() + BACK_WITHIN_S
        while not _call_taken(info["api"], livekit):
            assert time.monotonic() < deadline, "no call taken since LiveKit's restart"
            time.sleep(1)
        print(f"\nLiveKit killed -> restarted and a call taken in "
              f"{time.monotonic() - killed:.1f} s")
