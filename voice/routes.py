"""The control plane's voice route: ``POST /v1/voice/sessions`` starts a call of a session.

The caller proves who they are with their Agentia token (the same as the edge's); the session
must be theirs (or new). They get a LiveKit URL, room and room token as soon as the voice worker
is dispatched into that room, and join it while the agent does (the agent joins the session as
one more of its clients). A :class:`AgentWatch` task per call waits for the agent: if none comes
within ``voice_dispatch_wait_s`` the room is deleted (its metadata says ``no_voice_agent`` first,
which the caller's page shows) and the user's call slot given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from voice.tokens import Call, NoVoiceAgent, dispatch_call, room_name, start_call, wait_for_agent
from voice.webhooks import livekit_events_router

log = logging.getLogger("agentia.voice")

MAX_WATCHED = 256
"""Calls whose agent is awaited in the background at once; past it the route waits for the
agent itself before it answers (the way it always did before issue 16), so the tasks stay
bounded and a call whose agent never comes is still refused, ``503 no_voice_agent``."""


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
    call within ``voice_dispatch_wait_s``; only while :data:`MAX_WATCHED` calls are awaited
    already, else the call is answered at once and ended in its room). Every 503 carries
    ``Retry-After: 5``.
    """

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


def _unavailable() -> CallRefused:
    return CallRefused(503, "unavailable", "message bus unavailable: retry shortly")


async def open_call(bus: Bus, s: VoiceSettings, user: str, session: str,
                    slots: CallSlots | None = None, wait: bool = True) -> Call:
    """Create the session for ``user`` or check it is theirs, take one of the user's call
    slots, then start a call of it (the slot is given back if the call does not start).
    ``wait``: return only once the agent took the call (else only dispatch it)."""
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
        return await _start(s, session, user, room, wait)
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


async def _start(s: VoiceSettings, session: str, user: str, room: str, wait: bool) -> Call:
    begin = start_call if wait else dispatch_call
    try:
        return await begin(s, session, user, room)  # every LiveKit request is bounded
    except NoVoiceAgent:
        raise CallRefused(503, "no_voice_agent", "no voice agent is available: retry "
                          "shortly") from None
    except (lkapi.TwirpError, aiohttp.ClientError, OSError, TimeoutError):
        raise CallRefused(503, "voice_unavailable", "voice is unavailable: retry "
                          "shortly") from None


class AgentWatch:
    """The calls answered before their agent came: each one's agent awaited in a task (bounded
    by :data:`MAX_WATCHED`); a call whose agent never comes is ended in its room
    (:func:`voice.tokens.wait_for_agent`) and its slot given back."""

    def __init__(self, s: VoiceSettings, slots: CallSlots) -> None:
        self.s, self.slots = s, slots
        self._tasks: set[asyncio.Task[None]] = set()

    def room_for_one_more(self) -> bool:
        return len(self._tasks) < MAX_WATCHED

    def watch(self, user: str, call: Call) -> None:
        task = asyncio.create_task(self._watch(user, call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, user: str, call: Call) -> None:
        try:
            if await wait_for_agent(self.s, call):
                return
        except (lkapi.TwirpError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            # cannot tell: the slot's lease ends it, the page's own wait ends the call
            log.warning("could not watch for the agent of room %s: %r", call.room, exc)
            return
        log.warning("no voice agent took the call in room %s within %s s: room deleted",
                    call.room, self.s.voice_dispatch_wait_s)
        with contextlib.suppress(SlotsUnavailable):  # else its lease ends it
            await self.slots.release(user, call.room)


def voice_router(bus: Bus, s: VoiceSettings,
                 identity: Callable[..., Identity | Any]) -> APIRouter:
    """The route, with the app's ``identity`` dependency (Bearer token -> Identity)."""
    router = APIRouter()
    slots = bus.call_slots()
    watch = AgentWatch(s, slots)
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
        # answered once the dispatch exists: the caller connects while the agent joins (the
        # two took 0.4 s and 0.8 s one after the other, issue 16's 1 s Talk -> listening)
        background = s.voice_dispatch_wait_s > 0 and watch.room_for_one_more()
        try:
            call = await open_call(bus, s, who.user, req.session, slots, wait=not background)
        except CallRefused as exc:
            headers = {"Retry-After": "5"} if exc.status == 503 else None
            return JSONResponse({"detail": exc.reason, "code": exc.code}, exc.status, headers)
        if background:
            watch.watch(who.user, call)
        return VoiceSessionReply(session=req.session, url=call.url, room=call.room,
                                 token=call.token, expires_in=s.voice_token_ttl_s)

    return router
