"""Abandoned calls and calls per user, with the real voice worker and LiveKit server.

* a call whose caller never joins ends after ``AGENTIA_VOICE_JOIN_TIMEOUT_S``: the session log
  has ``ended``/``caller_never_joined``, the room is deleted, the job process exits, the call
  is no longer counted (``/readyz``) and its slot is free;
* a caller who joins within the bound keeps the call past it;
* a user holding ``AGENTIA_VOICE_MAX_CALLS_PER_USER`` calls gets 429 ``too_many_calls`` for a
  further one, and a new call is allowed once one of theirs ended.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from livekit import api as lkapi

from sessions import keys as K
from sessions.bus import Bus
from tests.conftest import Cluster, token
from tests.voice.conftest import VoiceWorker, voice_call, voice_settings
from tests.voice.livekit_server import LiveKitServer
from tests.voice.test_routes import app_for, post
from voice.caller import Caller
from voice.settings import VoiceSettings

pytestmark = pytest.mark.e2e

DISPATCH_WAIT_S = 8.0
"""The route's wait for a worker: LiveKit listed the job as taken ~5 s after the worker got it
(a 2 s wait answered ``no_voice_agent``, with 5 s the route answered at 5.1 s)."""
JOIN_TIMEOUT_S = 10.0


SHORT = {"AGENTIA_VOICE_JOIN_TIMEOUT_S": str(JOIN_TIMEOUT_S),
         "AGENTIA_VOICE_DISPATCH_WAIT_S": str(DISPATCH_WAIT_S)}
"""The voice worker's bounds in these tests."""


def route_settings(env: dict[str, str]) -> VoiceSettings:
    s = replace(voice_settings(env), voice_join_timeout_s=JOIN_TIMEOUT_S,
                voice_dispatch_wait_s=DISPATCH_WAIT_S, voice_max_calls_per_user=2)
    s.validate()
    return s


async def until(check: Callable[[], bool | Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await _result(check()):
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.1)


async def voice_calls(bus: Bus) -> int:
    """Calls as ``/readyz`` counts them: live voice nodes."""
    alive = await bus.redis.zrangebyscore(bus.keys.nodes_alive(), time.time() - K.NODE_TTL,
                                          "+inf")
    return sum(1 for n in alive if n.startswith(b"voice-"))


async def _result(value: bool | Awaitable[bool]) -> bool:
    return await value if inspect.isawaitable(value) else bool(value)


async def room_exists(s: VoiceSettings, room: str) -> bool:
    async with lkapi.LiveKitAPI(s.http_url, s.livekit_api_key, s.livekit_api_secret) as lk:
        rooms = await lk.room.list_rooms(lkapi.ListRoomsRequest(names=[room]))
    return any(r.name == room for r in rooms.rooms)


def job_pid(worker: VoiceWorker, room: str) -> int:
    found = re.search(rf"in job process (\d+) \(room {re.escape(room)},", worker.text())
    assert found, "the job did not log its process id"
    return int(found.group(1))


def running(pid: int) -> bool:
    """The process exists and is not a zombie (``/proc/<pid>/stat``'s state field)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def test_a_caller_who_never_joins_ends_the_call_and_frees_its_process(
        cluster: Cluster, bus: Bus, livekit: LiveKitServer) -> None:
    async with voice_call(cluster, livekit, "alice", prefix="nj", join=False,
                          AGENTIA_VOICE_EXECUTOR="process", **SHORT) as c:
        chat, worker, sid, s = c.chat, c.worker, c.sid, route_settings(c.env)
        asked = time.monotonic()
        status, call = await post(app_for(bus, s), {"session": sid}, token("alice"))
        assert status == 201, call
        print(f"\nthe route answered after {time.monotonic() - asked:.2f} s")
        await until(lambda: f"room {call['room']}," in worker.text(), 5,
                    "the job started")
        pid = job_pid(worker, call["room"])
        assert running(pid)
        assert await voice_calls(bus) == 1

        ended = await chat.until("call", timeout=JOIN_TIMEOUT_S + 10, state="ended")
        waited = time.monotonic() - asked
        assert ended["reason"] == "caller_never_joined"
        # the job started after the request and before the route answered
        assert JOIN_TIMEOUT_S <= waited < DISPATCH_WAIT_S + JOIN_TIMEOUT_S + 3, waited
        await until(lambda: not running(pid), 10, "the job process exited")
        assert not await room_exists(s, call["room"])

        async def released() -> bool:
            count = await bus.call_slots().count("alice")
            return count == 0 and await voice_calls(bus) == 0
        await until(released, 5, "the slot released and the call no longer counted")
        assert worker.proc.poll() is None  # the worker itself goes on
    assert "Traceback" not in c.worker.text()


async def test_a_third_call_of_one_user_is_refused_until_one_ends(
        cluster: Cluster, bus: Bus, livekit: LiveKitServer) -> None:
    async with voice_call(cluster, livekit, "erin", prefix="cap", join=False, **SHORT) as c:
        chat, sid, app = c.chat, c.sid, app_for(bus, route_settings(c.env))
        for _ in range(2):  # one after the other: two dispatches at once reached one worker
            status, reply = await post(app, {"session": sid}, token("erin"))  # as one job
            assert status == 201, reply
        status, reply = await post(app, {"session": sid}, token("erin"))
        assert (status, reply["code"]) == (429, "too_many_calls"), reply
        assert "at most 2 calls" in reply["detail"]

        # nobody joins: the first call ends at its join timeout and frees its slot
        ended = await chat.until("call", timeout=JOIN_TIMEOUT_S + 10, state="ended")
        assert ended["reason"] == "caller_never_joined"
        slots = bus.call_slots()

        async def one_free() -> bool:
            return await slots.count("erin") < 2
        await until(one_free, 5, "a slot freed")
        status, reply = await post(app, {"session": sid}, token("erin"))
        assert status == 201, reply
    assert "Traceback" not in c.worker.text()


async def test_a_caller_who_joins_in_time_keeps_the_call_past_the_bound(
        cluster: Cluster, bus: Bus, livekit: LiveKitServer) -> None:
    async with voice_call(cluster, livekit, "fred", prefix="in", join=False,
                          AGENTIA_VOICE_EXECUTOR="thread", **SHORT) as c:
        chat, sid = c.chat, c.sid
        asked = time.monotonic()
        status, call = await post(app_for(bus, route_settings(c.env)), {"session": sid},
                                  token("fred"))
        assert status == 201, call
        caller = c.caller = await Caller.join(call["url"], call["token"])
        await caller.ready(20)
        await asyncio.sleep(max(0.0, asked + JOIN_TIMEOUT_S + 1 - time.monotonic()))
        assert not [f for f in chat.frames if f["type"] == "call" and f["state"] == "ended"]
        assert not caller.agent_left.is_set() and await voice_calls(bus) == 1
        await c.leave()
        ended = await chat.until("call", timeout=20, state="ended")
        assert ended["reason"] == "participant_disconnected"
    assert "Traceback" not in c.worker.text()
