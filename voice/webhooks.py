"""LiveKit's webhooks to the control plane: the calls of a voice worker that died end anyway.

A voice worker killed outright (SIGKILL, the OOM killer, its host lost) writes nothing: with
the thread executor all its calls die with it. LiveKit still sees each call's agent leave its
room, and posts ``participant_left`` (signed with the API key pair) to
``POST /v1/voice/livekit-events``. When the participant that left is an agent in one of our
call rooms, and after :data:`LOST_GRACE_S` no agent is back in the room and nobody has
recorded the call's end, the control plane records it: a ``call`` ``ended`` event with
``reason: "worker_lost"``; it then gives the user's call slot back and deletes the room (the
caller sees the call end).

Exactly one ``ended`` per call: whoever writes it first claims the call's end marker
(``sessions.keys.call_end``, ``SET NX``); the voice job claims it on every normal end before
its agent leaves the room, so the normal path wins.

Answers: 200 (handled or ignored), 400 (not a webhook event), 401 (no or bad signature),
413 (body over :data:`MAX_BODY`), 503 (:data:`MAX_PENDING` ends already waiting).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from typing import Any

import aiohttp
import jwt
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from google.protobuf.json_format import Parse as parse_json
from google.protobuf.json_format import ParseError
from livekit import api as lkapi
from livekit.protocol.models import ParticipantInfo
from livekit.protocol.webhook import WebhookEvent

from agentia.codes import BusUnavailable
from sessions import events as E
from sessions import keys as K
from sessions.bus import Bus
from sessions.redis_client import REDIS_DOWN
from voice.settings import VoiceSettings
from voice.slots import SlotsUnavailable
from voice.tokens import agent_in_room, delete_room

log = logging.getLogger("agentia.voice")

EVENTS_PATH = "/v1/voice/livekit-events"
LOST_GRACE_S = 2.0
"""How long after the agent left the control plane waits before it ends the call itself: a
voice job that ends its call normally has recorded it by then."""
MAX_PENDING = 256
"""Agents that left and wait out the grace at once; past it the webhook is answered 503."""
MAX_BODY = 64 * 1024
"""A webhook event is a few KB."""
NODE = "control"
"""The ``node`` of a ``call`` event the control plane writes."""
AGENT = ParticipantInfo.Kind.AGENT


class Rejected(Exception):
    """The request is not a signed LiveKit webhook: ``status`` says why (400, 401, 413)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def verify(s: VoiceSettings, body: bytes, authorization: str) -> WebhookEvent:
    """The event in ``body`` if ``authorization`` is LiveKit's signature of it (a JWT of our
    API key pair whose ``sha256`` claim is the body's hash); :class:`Rejected` otherwise."""
    token = authorization.removeprefix("Bearer ").strip()
    if not token:
        raise Rejected(401, "no signature")
    try:
        claims = lkapi.TokenVerifier(s.livekit_api_key, s.livekit_api_secret).verify(token)
        signed = base64.b64decode(claims.sha256 or "", validate=True)
    except (jwt.PyJWTError, ValueError, TypeError, AttributeError):  # odd claims: ours only
        raise Rejected(401, "bad signature") from None
    if not signed or signed != hashlib.sha256(body).digest():
        raise Rejected(401, "the signature is not of this body")
    try:
        return parse_json(body.decode(), WebhookEvent(), ignore_unknown_fields=True)
    except (ParseError, UnicodeDecodeError):
        raise Rejected(400, "not a webhook event") from None


def session_of(s: VoiceSettings, room: str) -> str | None:
    """The session of a call room (``voice.tokens.room_name``); None for any other room."""
    if not room.startswith(s.voice_room_prefix):
        return None
    session, dash, _nonce = room[len(s.voice_room_prefix):].rpartition("-")
    return session if dash and K.SESSION_ID_RE.fullmatch(session) else None


class LostCalls:
    """Ends the calls whose agent left without their end recorded."""

    def __init__(self, bus: Bus, s: VoiceSettings, grace_s: float = LOST_GRACE_S) -> None:
        self.bus, self.s, self.grace_s = bus, s, grace_s
        self.slots = bus.call_slots()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.checked = 0
        """Calls whose end was checked after their agent left (ended here or not)."""

    def on_event(self, event: WebhookEvent) -> bool:
        """Handle one verified event; False when too many ends are waiting already."""
        if event.event != "participant_left" or event.participant.kind != AGENT:
            return True
        session = session_of(self.s, event.room.name)
        if session is None:
            return True
        if len(self._tasks) >= MAX_PENDING:
            return False
        task = asyncio.create_task(self._end_after_grace(session, event.room.name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _end_after_grace(self, session: str, room: str) -> None:
        await asyncio.sleep(self.grace_s)
        if await self._agent_back(room):
            self.checked += 1
            return
        try:
            ended = await self.end(session, room)
        except (BusUnavailable, SlotsUnavailable, *REDIS_DOWN) as exc:
            log.warning("could not check the end of the call in room %s: %r", room, exc)
            return
        finally:
            self.checked += 1
        if ended:
            await self._delete_room(room)

    async def end(self, session: str, room: str) -> bool:
        """Record ``ended``/``worker_lost`` for the call in ``room`` and give its slot back,
        unless its end is recorded already (False)."""
        owner = await self.bus.session_owner(session)
        if owner is None or not await self.slots.claim_end(session, room, NODE):
            return False
        log.warning("voice agent left room %s with the call of %s not ended: its voice worker "
                    "was lost; ending the call", room, session)
        await self.bus.append(session, E.call("ended", NODE, time.time(),
                                              reason="worker_lost", room=room))
        await self.slots.release(owner, room)
        return True

    async def _agent_back(self, room: str) -> bool:
        """An agent is in the room again (a full reconnect is a leave then a join): the call
        goes on. LiveKit failing: assumed not (the end marker still keeps ``ended`` single)."""
        try:
            return await agent_in_room(self.s, room)
        except (lkapi.TwirpError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("could not list the participants of room %s: %r", room, exc)
            return False

    async def _delete_room(self, room: str) -> None:
        try:
            await delete_room(self.s, room)
        except Exception as exc:  # LiveKit failing: the room empties and expires on its own
            log.info("could not delete room %s: %r", room, exc)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def read_body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise Rejected(413, "body too large")
    return body


def livekit_events_router(bus: Bus, s: VoiceSettings, lost: LostCalls | None = None
                          ) -> APIRouter:
    """``POST /v1/voice/livekit-events``: LiveKit's webhooks (its config's ``webhook.urls``)."""
    router = APIRouter()
    lost = lost or LostCalls(bus, s)

    @router.post(EVENTS_PATH, include_in_schema=False)
    async def livekit_events(request: Request) -> JSONResponse:
        try:
            body = await read_body(request)
            event = verify(s, body, request.headers.get("authorization", ""))
        except Rejected as exc:
            return JSONResponse({"detail": exc.reason}, exc.status)
        if not lost.on_event(event):
            return JSONResponse({"detail": "busy: retry shortly"}, 503, {"Retry-After": "5"})
        return JSONResponse({"ok": True})

    return router
