"""Starting a call: a LiveKit room token for the caller and a dispatch of the voice worker.

The control plane calls :func:`start_call` after it has checked the caller's Agentia token and
that the session is theirs. The session and user travel in the dispatch's metadata, which only
holders of the LiveKit API secret can write: the voice worker trusts it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from dataclasses import dataclass

import orjson
from livekit import api

from sessions import keys as K
from voice.settings import VoiceSettings

DISPATCH_POLL_S = 0.1
"""Between two looks at whether the call's agent arrived (two small LiveKit requests)."""


@dataclass(frozen=True, slots=True)
class Call:
    url: str
    """LiveKit URL the caller connects to."""
    room: str
    token: str
    """The caller's room token (never logged)."""
    dispatch_id: str


def job_metadata(session: str, user: str) -> str:
    return orjson.dumps({"session": session, "user": user}).decode()


def parse_job_metadata(raw: str) -> tuple[str, str]:
    """(session, user) from a dispatch's metadata; ValueError if it is not ours."""
    try:
        meta = orjson.loads(raw or "{}")
        session, user = meta["session"], meta["user"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise ValueError("job metadata must be {\"session\": ..., \"user\": ...}") from None
    if not (isinstance(session, str) and K.SESSION_ID_RE.fullmatch(session)):
        raise ValueError("job metadata has no valid session id")
    if not (isinstance(user, str) and user):
        raise ValueError("job metadata has no user")
    return session, user


def room_token(s: VoiceSettings, room: str, identity: str) -> str:
    """A token that lets ``identity`` join ``room``, publish its microphone and listen."""
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True,
                             can_publish_data=True)
    return (api.AccessToken(s.livekit_api_key, s.livekit_api_secret)
            .with_identity(identity).with_name(identity).with_grants(grants)
            .with_ttl(dt.timedelta(seconds=s.voice_token_ttl_s)).to_jwt())


class NoVoiceAgent(Exception):
    """No voice worker took the call within ``voice_dispatch_wait_s`` (the room is deleted)."""


def room_name(s: VoiceSettings, session: str) -> str:
    """A fresh room name for one call of ``session`` (also the call's slot, voice/slots.py)."""
    return f"{s.voice_room_prefix}{session}-{secrets.token_hex(4)}"[:128]


async def delete_room(s: VoiceSettings, room: str) -> None:
    """Delete ``room`` (its participants are disconnected), bounded by
    ``voice_livekit_timeout_s``; a room already gone is not an error. LiveKit errors
    propagate."""
    async with api.LiveKitAPI(s.http_url, s.livekit_api_key, s.livekit_api_secret,
                              failover=False) as lk:
        await _Requests(lk, room, s.voice_livekit_timeout_s).delete_room()


async def agent_in_room(s: VoiceSettings, room: str) -> bool:
    """Whether an agent participant is in ``room`` now (bounded by
    ``voice_livekit_timeout_s``; no such room: False). LiveKit errors propagate."""
    async with api.LiveKitAPI(s.http_url, s.livekit_api_key, s.livekit_api_secret,
                              failover=False) as lk:
        return await _Requests(lk, room, s.voice_livekit_timeout_s)._agent_in_room()


NO_AGENT_NOTE = orjson.dumps({"state": "error", "code": "no_voice_agent"}).decode()
"""The room's metadata when no voice worker took its call: the page reads it when the room is
then deleted (docs/voice.md, "Errors")."""


async def dispatch_call(s: VoiceSettings, session: str, user: str, room: str = "") -> Call:
    """A fresh room (``room``, or a new name) for one call of ``session``, a voice worker
    dispatched into it, and the caller's token: at once, without waiting for the agent (the
    caller joins while the agent does; :func:`wait_for_agent` watches it). Not retried: a job
    can be offered to a worker for seconds before the dispatch lists it, so a second dispatch
    could bring a second agent into the room. LiveKit errors propagate."""
    room = room or room_name(s, session)
    # livekit-api 1.x passes timeout=None per request, which disables the session's timeout
    # in aiohttp: every request is bounded here instead
    async with api.LiveKitAPI(s.http_url, s.livekit_api_key, s.livekit_api_secret,
                              failover=False) as lk:  # one server: no region discovery
        lkr = _Requests(lk, room, s.voice_livekit_timeout_s)
        dispatch_id = await lkr.dispatch(s.voice_agent_name, job_metadata(session, user))
    return Call(url=s.livekit_url, room=room, token=room_token(s, room, user),
                dispatch_id=dispatch_id)


async def wait_for_agent(s: VoiceSettings, call: Call) -> bool:
    """Whether a voice worker took ``call`` within ``voice_dispatch_wait_s`` (0: True at
    once). If not, the room (and its dispatch) is deleted, its metadata first set to
    :data:`NO_AGENT_NOTE` so that a caller already in it learns why (LiveKit hands a job only
    to a worker, and from a server node, under its load limits, and does not retry). LiveKit
    errors propagate."""
    if s.voice_dispatch_wait_s <= 0:
        return True
    async with api.LiveKitAPI(s.http_url, s.livekit_api_key, s.livekit_api_secret,
                              failover=False) as lk:
        lkr = _Requests(lk, call.room, s.voice_livekit_timeout_s)
        if await lkr.taken(call.dispatch_id, s.voice_dispatch_wait_s):
            return True
        await lkr.note(NO_AGENT_NOTE)
        await lkr.delete_room()
    return False


async def start_call(s: VoiceSettings, session: str, user: str, room: str = "") -> Call:
    """:func:`dispatch_call`, then :func:`wait_for_agent`: returns only once a worker took
    the call, else raises :class:`NoVoiceAgent` (the room deleted). For callers that must not
    join a room no agent will come to (the tests' callers); the route answers at once."""
    call = await dispatch_call(s, session, user, room)
    if not await wait_for_agent(s, call):
        raise NoVoiceAgent(call.room)
    return call


class _Requests:
    """The LiveKit API requests of one call's start, each bounded by ``bound`` seconds."""

    def __init__(self, lk: api.LiveKitAPI, room: str, bound: float) -> None:
        self.lk, self.room, self.bound = lk, room, bound

    async def dispatch(self, agent_name: str, metadata: str) -> str:
        d = await asyncio.wait_for(self.lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=agent_name, room=self.room,
                                           metadata=metadata)), self.bound)
        return str(d.id)

    async def delete_room(self) -> None:
        try:
            await asyncio.wait_for(self.lk.room.delete_room(
                api.DeleteRoomRequest(room=self.room)), self.bound)
        except api.TwirpError as exc:  # already gone (or never made): nothing to delete
            if exc.code != api.TwirpErrorCode.NOT_FOUND:
                raise

    async def note(self, metadata: str) -> None:
        """Set the room's metadata (its participants get it at once); no room: nothing."""
        try:
            await asyncio.wait_for(self.lk.room.update_room_metadata(
                api.UpdateRoomMetadataRequest(room=self.room, metadata=metadata)), self.bound)
        except api.TwirpError as exc:
            if exc.code != api.TwirpErrorCode.NOT_FOUND:
                raise

    async def taken(self, dispatch_id: str, within: float) -> bool:
        """Whether a worker accepted the dispatch's job within ``within`` seconds: its agent
        is in the room, or the dispatch lists the job as taken.

        The room's participants come first: measured on LiveKit 1.13.5, the agent was in the
        room 0.38 s after the dispatch while ``ListDispatch`` showed the job's worker only
        ~5 s later (the dispatch's job state is updated late), so the caller waited 6 s for
        a call whose agent was already listening. The listing stays as the second sign (an
        agent that takes the job but is slow to connect)."""
        deadline = time.monotonic() + within
        while True:
            agent_in_room, listed = await asyncio.gather(self._agent_in_room(),
                                                         self._listed(dispatch_id))
            if agent_in_room or listed:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(DISPATCH_POLL_S)

    async def _agent_in_room(self) -> bool:
        try:
            got = await asyncio.wait_for(self.lk.room.list_participants(
                api.ListParticipantsRequest(room=self.room)), self.bound)
        except api.TwirpError as exc:  # the room is made with the job: not there yet
            if exc.code != api.TwirpErrorCode.NOT_FOUND:
                raise
            return False
        return any(p.kind == api.ParticipantInfo.Kind.AGENT for p in got.participants)

    async def _listed(self, dispatch_id: str) -> bool:
        listed = await asyncio.wait_for(
            self.lk.agent_dispatch.list_dispatch(room_name=self.room), self.bound)
        return any(d.id == dispatch_id and any(j.state.worker_id for j in d.state.jobs)
                   for d in listed)
