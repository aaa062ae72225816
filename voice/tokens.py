"""Starting a call: a LiveKit room token for the caller and a dispatch of the voice worker.

The control plane calls :func:`start_call` after it has checked the caller's Agentia token and
that the session is theirs. The session and user travel in the dispatch's metadata, which only
holders of the LiveKit API secret can write: the voice worker trusts it.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

import aiohttp
import orjson
from livekit import api

from sessions import keys as K
from voice.settings import VoiceSettings


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


async def start_call(s: VoiceSettings, session: str, user: str) -> Call:
    """A fresh room for one call of ``session``, the voice worker dispatched into it."""
    room = f"{s.voice_room_prefix}{session}-{secrets.token_hex(4)}"[:128]
    async with api.LiveKitAPI(s.http_url, s.livekit_api_key, s.livekit_api_secret,
                              timeout=aiohttp.ClientTimeout(total=10)) as lk:
        dispatch = await lk.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
            agent_name=s.voice_agent_name, room=room, metadata=job_metadata(session, user)))
    return Call(url=s.livekit_url, room=room, token=room_token(s, room, user),
                dispatch_id=dispatch.id)
