"""A killed voice worker's calls still end (voice/webhooks.py), with real processes: a LiveKit
server posting its webhooks to the control plane's route (uvicorn in this process), the real
voice worker with the thread executor (its calls die with it, writing nothing).

* SIGKILL mid-call: the session log gets ``call`` ``ended`` ``worker_lost`` within a bound,
  once; the call slot is given back; the caller sees the room end;
* a normal hang-up: exactly one ``ended`` (the worker's), the webhook checked and stood back;
* requests that are not signed LiveKit webhooks: 401 / 400 / 413, never a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import orjson
import pytest
import uvicorn
from fastapi import FastAPI
from livekit import api as lkapi

from sessions.bus import Bus
from tests.conftest import Client, Cluster
from tests.voice.conftest import voice_call
from tests.voice.livekit_server import LiveKitServer, find_binary, free_port
from voice.settings import VoiceSettings
from voice.webhooks import EVENTS_PATH, MAX_BODY, LostCalls, livekit_events_router

pytestmark = pytest.mark.e2e

LOST_BOUND_S = 30.0
"""From the kill to the ``ended`` event: LiveKit notices the agent gone (its signal socket
closes with the process), then the grace."""


@pytest.fixture(scope="module")
def hook_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory, hook_port: int) -> Iterator[LiveKitServer]:
    """A LiveKit server of its own whose webhooks go to ``hook_port``."""
    binary = find_binary()
    if binary is None:
        pytest.skip("no LiveKit server binary (go install "
                    "github.com/livekit/livekit-server/cmd/server@v1.13.5)")
    server = LiveKitServer(binary, tmp_path_factory.mktemp("livekit-hooked"),
                           webhook_url=f"http://127.0.0.1:{hook_port}{EVENTS_PATH}").start()
    yield server
    server.stop()


def settings(lk: LiveKitServer, prefix: str) -> VoiceSettings:
    return VoiceSettings(livekit_url=lk.url, livekit_api_key=lk.key,
                         livekit_api_secret=lk.secret, redis_prefix=prefix)


@pytest.fixture
async def lost(bus: Bus, hooked: LiveKitServer, hook_port: int,
               prefix: str) -> AsyncIterator[LostCalls]:
    """The webhook route served on ``hook_port`` (what the control plane mounts)."""
    s = settings(hooked, prefix)
    calls = LostCalls(bus, s)
    app = FastAPI()
    app.include_router(livekit_events_router(bus, s, calls))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=hook_port,
                                           log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:  # noqa: ASYNC110 (uvicorn has no started event)
            await asyncio.sleep(0.02)
    yield calls
    server.should_exit = True
    await asyncio.wait_for(task, 10)
    await calls.aclose()


def ended(chat: Client) -> list[dict[str, object]]:
    return [f for f in chat.frames if f["type"] == "call" and f.get("state") == "ended"]


async def test_a_killed_thread_worker_s_call_ends_worker_lost(
        cluster: Cluster, bus: Bus, hooked: LiveKitServer, lost: LostCalls) -> None:
    async with voice_call(cluster, hooked, "dave", prefix="lost",
                          AGENTIA_VOICE_EXECUTOR="thread") as c:
        await c.chat.until("call", timeout=20, state="joined")
        assert c.call is not None
        assert await bus.call_slots().count("dave") == 1
        os.kill(c.worker.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        c.worker.proc.wait(5)
        end = await c.chat.until("call", timeout=LOST_BOUND_S, state="ended")
        took = time.monotonic() - killed
        print(f"ended worker_lost {took:.1f} s after the kill")
        assert end["reason"] == "worker_lost" and end["room"] == c.call.room
        assert end["node"] == "control"
        assert await bus.call_slots().count("dave") == 0  # not after its 60 s lease
        await asyncio.wait_for(c.joined.agent_left.wait(), 10)  # the room was deleted
        assert lost.checked == 1
        assert len(ended(c.chat)) == 1


async def checked(lost: LostCalls, n: int, within: float) -> None:
    async with asyncio.timeout(within):
        while lost.checked < n:  # noqa: ASYNC110 (a counter)
            await asyncio.sleep(0.1)


async def test_a_normal_hang_up_ends_once(cluster: Cluster, bus: Bus, hooked: LiveKitServer,
                                          hook_port: int, lost: LostCalls) -> None:
    async with voice_call(cluster, hooked, "erin", prefix="lost",
                          AGENTIA_VOICE_EXECUTOR="thread") as c:
        await c.chat.until("call", timeout=20, state="joined")
        assert c.call is not None
        # an agent that left and came back (a full reconnect) is no lost call
        event = orjson.dumps({"event": "participant_left", "room": {"name": c.call.room},
                              "participant": {"identity": "agent-x", "kind": "AGENT"}})
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{hook_port}{EVENTS_PATH}", data=event,
                headers={"Authorization": signed(hooked, event)}) as r:
            assert r.status == 200
        await checked(lost, 1, 10)
        assert ended(c.chat) == []
        await c.leave()  # the caller hangs up: the job ends, its agent leaves the room
        end = await c.chat.until("call", timeout=20, state="ended")
        assert end["reason"] != "worker_lost"
        await checked(lost, 2, 20)  # LiveKit posted participant_left, the grace passed
        await asyncio.sleep(0.5)  # a second ended, were one written, would reach the chat
        assert len(ended(c.chat)) == 1
        assert c.worker.proc.poll() is None  # the worker lives on


def signed(lk: LiveKitServer, body: bytes, secret: str | None = None,
           ttl_s: int = 60) -> str:
    sha = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return (lkapi.AccessToken(lk.key, secret or lk.secret).with_sha256(sha)
            .with_ttl(dt.timedelta(seconds=ttl_s)).to_jwt())


async def test_requests_not_signed_by_livekit_are_refused(
        hooked: LiveKitServer, hook_port: int, lost: LostCalls) -> None:
    url = f"http://127.0.0.1:{hook_port}{EVENTS_PATH}"
    event = b'{"event": "participant_left", "room": {"name": "agentia-call-x-00000000"}}'
    cases = [
        (event, {}, 401),  # unsigned
        (event, {"Authorization": "not a jwt"}, 401),
        (event, {"Authorization": signed(hooked, event, secret="x" * 48)}, 401),  # other key
        (event, {"Authorization": signed(hooked, b"another body")}, 401),
        (event, {"Authorization": signed(hooked, event, ttl_s=-120)}, 401),  # expired
        (b"\xff{", {"Authorization": signed(hooked, b"\xff{")}, 400),
        (b'{"event": 7}', {"Authorization": signed(hooked, b'{"event": 7}')}, 400),
        (b"x" * (MAX_BODY + 1), {}, 413),
        (event, {"Authorization": signed(hooked, event)}, 200),  # not an agent: ignored
    ]
    async with aiohttp.ClientSession() as http:
        for body, headers, status in cases:
            async with http.post(url, data=body, headers=headers) as r:
                assert r.status == status, (body[:40], headers, await r.text())
    assert lost.checked == 0



async def test_a_killed_job_process_s_call_ends_worker_lost(
        cluster: Cluster, bus: Bus, hooked: LiveKitServer, lost: LostCalls) -> None:
    """The process executor: the call's own job process killed (OOM), its worker alive."""
    async with voice_call(cluster, hooked, "fay", prefix="lost",
                          AGENTIA_VOICE_EXECUTOR="process") as c:
        await c.chat.until("call", timeout=20, state="joined")
        found = re.search(rf"call of session {c.sid} in job process (\d+)", c.worker.text())
        assert found, "the worker logs each call's job process"
        os.kill(int(found[1]), signal.SIGKILL)
        killed = time.monotonic()
        end = await c.chat.until("call", timeout=LOST_BOUND_S, state="ended")
        print(f"ended worker_lost {time.monotonic() - killed:.1f} s after the kill")
        assert end["reason"] == "worker_lost" and end["node"] == "control"
        assert await bus.call_slots().count("fay") == 0
        assert len(ended(c.chat)) == 1
        assert c.worker.proc.poll() is None
