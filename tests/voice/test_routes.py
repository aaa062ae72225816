"""POST /v1/voice/sessions against real Redis and a real LiveKit server (no voice worker)."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import Any

import jwt
import orjson
import pytest
from fastapi import FastAPI
from livekit import api as lkapi
from livekit import rtc

from control.api import identity
from gateway.auth import Verifier
from sessions.bus import Bus
from tests.conftest import TEST_SECRET, token
from tests.voice.livekit_server import LiveKitServer, free_port
from voice import routes
from voice.routes import voice_router
from voice.settings import VoiceSettings

pytestmark = pytest.mark.e2e


def settings_for(lk: LiveKitServer, url: str | None = None, wait: float = 0.0,
                 timeout: float = 5.0) -> VoiceSettings:
    return VoiceSettings(livekit_url=url or lk.url, livekit_api_key=lk.key,
                         livekit_api_secret=lk.secret, voice_dispatch_wait_s=wait,
                         voice_livekit_timeout_s=timeout)


def app_for(bus: Bus, s: VoiceSettings) -> FastAPI:
    app = FastAPI()
    app.state.verifier = Verifier(TEST_SECRET)
    app.include_router(voice_router(bus, s, identity))
    return app


async def post(app: FastAPI, body: dict[str, Any], tok: str | None) -> tuple[int, Any]:
    """One request through the ASGI interface (no HTTP client library needed)."""
    headers = [(b"content-type", b"application/json")]
    if tok:
        headers.append((b"authorization", f"Bearer {tok}".encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "path": "/v1/voice/sessions", "raw_path": b"/v1/voice/sessions",
             "query_string": b"", "headers": headers, "scheme": "http", "root_path": "",
             "server": ("test", 80), "client": ("test", 1)}
    inbox = [{"type": "http.request", "body": orjson.dumps(body), "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, orjson.loads(raw)


async def test_the_owner_gets_a_room_token_and_the_agent_is_dispatched(
        bus: Bus, livekit: LiveKitServer) -> None:
    s = settings_for(livekit)
    app = app_for(bus, s)
    sid = f"r-{uuid.uuid4().hex[:8]}"
    status, reply = await post(app, {"session": sid}, token("alice"))
    assert status == 201, reply
    assert reply["url"] == livekit.url and reply["session"] == sid
    grant = jwt.decode(reply["token"], livekit.secret, algorithms=["HS256"])
    assert grant["sub"] == "alice" and grant["video"]["room"] == reply["room"]
    async with lkapi.LiveKitAPI(s.http_url, s.livekit_api_key, s.livekit_api_secret) as lk:
        dispatches = await lk.agent_dispatch.list_dispatch(room_name=reply["room"])
    # (the server also lists its default dispatch for unnamed agents, which we never run)
    ours = [orjson.loads(d.metadata) for d in dispatches if d.agent_name == "agentia-voice"]
    assert ours == [{"session": sid, "user": "alice"}]
    assert (await bus.session_meta(sid))["owner"] == "alice"


async def test_refusals(bus: Bus, livekit: LiveKitServer) -> None:
    app = app_for(bus, settings_for(livekit))
    sid = f"r-{uuid.uuid4().hex[:8]}"
    await bus.open_session(sid, "alice")
    assert (await post(app, {"session": sid}, None))[0] == 401
    assert (await post(app, {"session": sid}, token("mallory")))[0] == 403
    assert (await post(app, {"session": "bad id"}, token("alice")))[0] == 422
    status, reply = await post(app, {"session": sid}, token("mallory"))
    assert (status, reply["code"]) == (403, "forbidden")
    down = app_for(bus, settings_for(livekit, f"ws://127.0.0.1:{free_port()}"))
    status, reply = await post(down, {"session": sid}, token("alice"))
    assert (status, reply["code"]) == (503, "voice_unavailable")
    assert "voice is unavailable" in reply["detail"]


async def test_a_livekit_that_never_answers_is_a_bounded_503(bus: Bus) -> None:
    with socket.socket() as mute:  # accepts connections (backlog), never answers
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        url = f"ws://127.0.0.1:{mute.getsockname()[1]}"
        s = VoiceSettings(livekit_url=url, voice_livekit_timeout_s=1.0)
        t0 = time.monotonic()
        status, reply = await post(app_for(bus, s), {"session": "r-mute"}, token("alice"))
    assert (status, reply["code"]) == (503, "voice_unavailable")
    assert time.monotonic() - t0 < 4


async def test_no_voice_worker_ends_the_call_in_its_room(
        bus: Bus, livekit: LiveKitServer) -> None:
    """The route answers once the agent is dispatched; the caller is in the room when no
    worker takes the call: the room's metadata says ``no_voice_agent`` (what the page shows),
    then the room is deleted and the user's slot given back."""
    s = settings_for(livekit, wait=1.0)
    sid = f"r-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    status, reply = await post(app_for(bus, s), {"session": sid}, token("alice"))
    assert status == 201, reply
    assert time.monotonic() - t0 < 1.0  # not the wait for the agent
    room, notes, gone = rtc.Room(), [], asyncio.Event()
    room.on("room_metadata_changed", lambda _old, new: notes.append(new))
    room.on("disconnected", lambda reason: gone.set())
    await room.connect(reply["url"], reply["token"])
    try:
        await asyncio.wait_for(gone.wait(), 8)
    finally:
        await room.disconnect()
    assert 1.0 <= time.monotonic() - t0 < 8
    assert orjson.loads(notes[-1]) == {"state": "error", "code": "no_voice_agent"}, notes
    async with lkapi.LiveKitAPI(s.http_url, s.livekit_api_key, s.livekit_api_secret) as lk:
        rooms = await lk.room.list_rooms(lkapi.ListRoomsRequest())
    assert not [r.name for r in rooms.rooms if sid in r.name]
    assert await bus.call_slots().count("alice") == 0  # its slot given back


async def test_past_the_watched_calls_no_voice_worker_is_a_503(
        bus: Bus, livekit: LiveKitServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """With MAX_WATCHED calls awaited already the route waits for the agent itself."""
    monkeypatch.setattr(routes, "MAX_WATCHED", 0)
    s = settings_for(livekit, wait=1.0)
    sid = f"r-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    status, reply = await post(app_for(bus, s), {"session": sid}, token("alice"))
    assert (status, reply["code"]) == (503, "no_voice_agent")
    assert 1.0 <= time.monotonic() - t0 < 5
    async with lkapi.LiveKitAPI(s.http_url, s.livekit_api_key, s.livekit_api_secret) as lk:
        rooms = await lk.room.list_rooms(lkapi.ListRoomsRequest())
    assert not [r.name for r in rooms.rooms if sid in r.name]
    assert await bus.call_slots().count("alice") == 0  # its slot given back


async def test_a_call_cannot_create_sessions_past_the_users_limits(bus: Bus) -> None:
    """New sessions made by a call count against the same per-user limits as the edge's
    (sessions/opening.py): over them, 429 with the code of the edge's close (4502 / 4503)."""
    down = f"ws://127.0.0.1:{free_port()}"  # the refusal comes before any LiveKit request
    user = f"v-{uuid.uuid4().hex[:8]}"
    hourly = app_for(bus, VoiceSettings(livekit_url=down, max_sessions_per_hour=2))
    for n in (1, 2):
        status, reply = await post(hourly, {"session": f"{user}-{n}"}, token(user))
        assert (status, reply["code"]) == (503, "voice_unavailable")  # counted, then LiveKit
    status, reply = await post(hourly, {"session": f"{user}-3"}, token(user))
    assert (status, reply["code"]) == (429, "new_sessions_rate"), reply
    assert await bus.session_meta(f"{user}-3") == {}  # not created
    status, reply = await post(hourly, {"session": f"{user}-1"}, token(user))
    assert reply["code"] == "voice_unavailable"  # an existing session is never refused
    live = app_for(bus, VoiceSettings(livekit_url=down, max_sessions_per_user=2))
    status, reply = await post(live, {"session": f"{user}-4"}, token(user))
    assert (status, reply["code"]) == (429, "too_many_sessions"), reply
