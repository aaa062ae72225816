"""The control plane's voice route: ``POST /v1/voice/sessions`` starts a call of a session.

The caller proves who they are with their Agentia token (the same as the edge's); the session
must be theirs (or new). They get a LiveKit URL, room and room token; the voice worker is
dispatched into that room and joins the session as one more of its clients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import aiohttp
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from livekit import api as lkapi
from pydantic import BaseModel, Field

from agentia.codes import BusUnavailable
from gateway.auth import Identity
from sessions import keys as K
from sessions.bus import Bus, Forbidden, Missing
from sessions.opening import Limits, Refused
from voice.settings import VoiceSettings
from voice.slots import CallSlots, SlotsUnavailable
from voice.tokens import Call, NoVoiceAgent, room_name, start_call
from voice.webhooks import livekit_events_router


class VoiceSessionRequest(BaseModel):
    session: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class VoiceSessionReply(BaseModel):
    session: str
    url: str
    room: str
    token: str
    expires_in: int


class CallError(BaseModel):
    detail: str
    code: str


class CallRefused(Exception):
    """The call cannot start: ``status`` is the HTTP status to answer, ``code`` says why.

    Codes (the JSON body's ``code``, beside FastAPI's usual ``detail``): ``forbidden`` (403),
    ``too_many_calls`` (429: the user already holds ``voice_max_calls_per_user`` live calls),
    ``new_sessions_rate`` / ``too_many_sessions`` (429: a new session over the user's session
    limits, the same as close codes 4502 / 4503 on the edge),
    ``unavailable`` (503: Redis), ``voice_unavailable`` (503: LiveKit unreachable or failing,
    within ``voice_livekit_timeout_s``), ``no_voice_agent`` (503: no voice worker took the
    call within ``voice_dispatch_wait_s``). Every 503 carries ``Retry-After: 5``.
    """

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


def _unavailable() -> CallRefused:
    return CallRefused(503, "unavailable", "message bus unavailable: retry shortly")


async def open_call(bus: Bus, s: VoiceSettings, user: str, session: str,
                    slots: CallSlots | None = None) -> Call:
    """Create the session for ``user`` or check it is theirs, take one of the user's call
    slots, then start a call of it (the slot is given back if the call does not start)."""
    slots = slots or bus.call_slots()
    try:
        await _open_session(bus, s, user, session)
    except Forbidden:
        raise CallRefused(403, "forbidden", "this session belongs to another user") from None
    except BusUnavailable:
        raise _unavailable() from None
    room = room_name(s, session)
    # until the job refreshes it: the wait for a worker, then the join bound, then a lease
    lease = s.voice_dispatch_wait_s + s.voice_join_timeout_s + K.CALL_SLOT_LEASE
    try:
        if not await slots.acquire(user, room, s.voice_max_calls_per_user, lease):
            raise CallRefused(429, "too_many_calls", f"at most {s.voice_max_calls_per_user} "
                              "calls at once: end one first")
    except SlotsUnavailable:
        raise _unavailable() from None
    try:
        return await _start(s, session, user, room)
    except BaseException:
        with contextlib.suppress(SlotsUnavailable):  # else its lease ends it
            await slots.release(user, room)
        raise


_SESSION_CODES = {4502: "new_sessions_rate", 4503: "too_many_sessions"}


async def _open_session(bus: Bus, s: VoiceSettings, user: str, session: str) -> None:
    """Open the user's session; a new one is first counted against the user's session limits
    (sessions/opening.py), the same ones an edge applies, so a call cannot bypass them."""
    limits = Limits(0, s.max_sessions_per_hour, s.max_sessions_per_user, s.new_session_ttl_s)
    if limits.sessions_per_hour or limits.sessions:
        try:
            await bus.open_session(session, user, create=False)
            return
        except Missing:
            pass
        [refusal] = await bus.user_limits(limits).reserve([(user, session)])
        if isinstance(refusal, Refused):
            raise CallRefused(429, _SESSION_CODES[int(refusal.code)], refusal.reason)
        if isinstance(refusal, BusUnavailable):
            raise _unavailable()
        if refusal is not None:
            raise refusal
    await bus.open_session(session, user)


async def _start(s: VoiceSettings, session: str, user: str, room: str) -> Call:
    try:
        return await start_call(s, session, user, room)  # every LiveKit request is bounded
    except NoVoiceAgent:
        raise CallRefused(503, "no_voice_agent", "no voice agent is available: retry "
                          "shortly") from None
    except (lkapi.TwirpError, aiohttp.ClientError, OSError, TimeoutError):
        raise CallRefused(503, "voice_unavailable", "voice is unavailable: retry "
                          "shortly") from None


def voice_router(bus: Bus, s: VoiceSettings,
                 identity: Callable[..., Identity | Any]) -> APIRouter:
    """The route, with the app's ``identity`` dependency (Bearer token -> Identity)."""
    router = APIRouter()
    slots = bus.call_slots()
    router.include_router(livekit_events_router(bus, s))  # a lost worker's calls (webhooks.py)

    # a default, not Annotated[...]: annotations are strings here (PEP 563) and FastAPI
    # resolves them in the module's globals, where this function's ``identity`` is not
    @router.post("/v1/voice/sessions", response_model=VoiceSessionReply, status_code=201,
                 responses={403: {"model": CallError}, 429: {"model": CallError},
                            503: {"model": CallError}})
    async def create_voice_session(
            req: VoiceSessionRequest,
            who: Identity = Depends(identity)) -> VoiceSessionReply | JSONResponse:  # noqa: B008
        """Start a call of ``session``: a LiveKit room token, the voice agent dispatched."""
        try:
            call = await open_call(bus, s, who.user, req.session, slots)
        except CallRefused as exc:
            headers = {"Retry-After": "5"} if exc.status == 503 else None
            return JSONResponse({"detail": exc.reason, "code": exc.code}, exc.status, headers)
        return VoiceSessionReply(session=req.session, url=call.url, room=call.room,
                                 token=call.token, expires_in=s.voice_token_ttl_s)

    return router
