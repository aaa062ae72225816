"""The service API (docs/backend.md): what an application's backend does to sessions with a
service token (a JWT whose ``scope`` claim names what it may do, gateway/auth.py): post a
message into a session, delete a session or a user's sessions, read a session's presence.

Checks, in order: a valid token (else 401), the scope or ownership the route needs (else 403),
a well-formed session id (else 400), the session exists (else 404). (No ``from __future__
import annotations``: FastAPI reads the routes' annotations, which name locals.)
"""


import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, field_validator

from agentia.codes import BusUnavailable
from gateway.auth import Identity
from sessions import keys as K
from sessions.backend_redis import Backend
from sessions.bus import REDIS_DOWN, Bus, Forbidden, is_down

T = TypeVar("T")
MAX_MESSAGE_CHARS = 16_000
"""Characters of a posted message at most: the default of a ``send``'s text
(``AGENTIA_MAX_TEXT_CHARS``)."""
SID = Annotated[str, Path(description="session id, [A-Za-z0-9_.:-]{1,64} (else 400)")]
USER = Annotated[str, Path(min_length=1, max_length=128, description="a token's `sub`")]


class MessageRequest(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS,
                      description="not only whitespace; valid Unicode (no lone surrogates)")
    role: Literal["operator", "system"] = "operator"

    @field_validator("text")
    @classmethod
    def _text(cls, text: str) -> str:
        # as a send's text (gateway/protocol.py); JSON's "\ud800" escape decodes to a lone
        # surrogate, which no UTF-8 log entry can hold: refused here (422), not a 500 later
        if not text.strip():
            raise ValueError("text must not be only whitespace")
        try:
            text.encode()
        except UnicodeEncodeError:
            raise ValueError("text must be valid Unicode (no lone surrogates)") from None
        return text


class MessageReply(BaseModel):
    session: str
    offset: int
    """The ``message`` event's offset in the session log."""


class TakeoverReply(BaseModel):
    session: str
    active: bool
    """True: an operator holds the session (the agent runs none of its turns)."""
    by: str
    """The operator (the token's ``sub``)."""
    offset: int
    """The ``takeover`` event's offset in the session log; 0 when the session was in that
    state already (nothing appended)."""


class DeletedUser(BaseModel):
    user: str
    sessions: int
    """Sessions deleted."""


class DeviceItem(BaseModel):
    node: str
    since: float
    """When the device connected (unix seconds)."""
    user_agent: str | None


class PresenceReply(BaseModel):
    session: str
    connected: int
    devices: list[DeviceItem]
    voice: bool
    operator: bool = False


class ErrorReply(BaseModel):
    detail: str


def _errors(*codes: int) -> dict[int | str, dict[str, object]]:
    why = {400: "bad session id", 401: "missing or invalid token",
           403: "the token lacks the scope (or is not the owner's)",
           404: "no such session", 503: "Redis unavailable: retry"}
    return {c: {"model": ErrorReply, "description": why[c]} for c in codes}


async def invalid_request(_request: Request, exc: Exception) -> Response:
    """FastAPI's 422, rendered so that any input can be echoed: its default handler encodes
    the offending input as UTF-8 and a lone surrogate (``"\\ud800"`` in the JSON body) made
    it fail with a 500 and a traceback. ASCII JSON escapes it instead."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    body = json.dumps({"detail": jsonable_encoder(errors)}, ensure_ascii=True)
    return Response(body, 422, media_type="application/json")


def need(who: Identity, scope: str, sid: str | None = None) -> None:
    """403 without ``scope``; then 400 for a malformed session id."""
    if scope and not who.can(scope):
        raise HTTPException(403, f"this needs a service token with scope {scope}")
    if sid is not None and not K.SESSION_ID_RE.fullmatch(sid):
        raise HTTPException(400, "bad session id")


async def _owned_or(who: Identity, bus: Bus, sid: str, scope: str) -> None:
    """The session's owner (any token whose ``sub`` owns it) or ``scope``; 404 if missing."""
    owner = await bus.session_owner(sid)
    if owner is None:
        raise HTTPException(404, "no such session")
    if owner != who.user and not who.can(scope):
        raise HTTPException(403, f"this session belongs to another user (or needs {scope})")


def backend_router(bus: Bus, identity: Callable[..., Identity]) -> APIRouter:
    api = Backend(bus)
    Who = Annotated[Identity, Depends(identity)]
    r = APIRouter(prefix="/v1", tags=["backend"])

    @r.post("/sessions/{sid}/messages", response_model=MessageReply,
            responses=_errors(400, 401, 403, 404, 503))
    async def post_message(sid: SID, body: MessageRequest, who: Who) -> MessageReply:
        """Append a ``message`` event (role, text, by) to the session: every connected
        device gets it, and the agent sees it on its next turn (needs ``sessions:write``)."""
        need(who, "sessions:write", sid)
        offset = await _unavailable(api.post_message(sid, body.role, body.text, who.user))
        if offset is None:
            raise HTTPException(404, "no such session")
        return MessageReply(session=sid, offset=offset)

    async def _takeover(sid: str, who: Identity, active: bool) -> TakeoverReply:
        need(who, "sessions:operate", sid)
        t = await _unavailable(api.takeover(sid, who.user, active))
        if t is None:
            raise HTTPException(404, "no such session")
        return TakeoverReply(session=sid, active=t.active, by=t.by, offset=t.offset)

    @r.post("/sessions/{sid}/takeover", response_model=TakeoverReply,
            responses=_errors(400, 401, 403, 404, 503))
    async def take_over(sid: SID, who: Who) -> TakeoverReply:
        """An operator takes the session over (needs ``sessions:operate``): the agent runs
        none of its turns (a running one is cancelled; user turns are stored, delivered and
        ended ``cancelled`` with reason ``takeover``) until ``DELETE``; a ``takeover`` event
        tells every device."""
        return await _takeover(sid, who, True)

    @r.delete("/sessions/{sid}/takeover", response_model=TakeoverReply,
              responses=_errors(400, 401, 403, 404, 503))
    async def give_back(sid: SID, who: Who) -> TakeoverReply:
        """Give the session back to the agent (needs ``sessions:operate``): it sees the user
        turns and operator messages of the takeover in its memory from its next turn."""
        return await _takeover(sid, who, False)

    @r.delete("/sessions/{sid}", status_code=204, response_class=Response,
              responses=_errors(400, 401, 403, 404, 503))
    async def delete_session(sid: SID, who: Who) -> Response:
        """Delete the session (log, memory, every key) and close its sockets with 4506
        (its owner, or ``sessions:write``)."""
        need(who, "", sid)
        owner = "" if who.can("sessions:write") else who.user
        try:
            had = await _unavailable(api.delete_session(sid, owner))
        except Forbidden:
            raise HTTPException(403, "this session belongs to another user "
                                     "(or needs sessions:write)") from None
        if had is None:
            raise HTTPException(404, "no such session")
        return Response(status_code=204)

    @r.delete("/users/{user}", response_model=DeletedUser, responses=_errors(401, 403, 503))
    async def delete_user(user: USER, who: Who) -> DeletedUser:
        """Delete every session of the user (needs ``users:delete``)."""
        need(who, "users:delete")
        return DeletedUser(user=user, sessions=await _unavailable(api.delete_user(user)))

    @r.get("/sessions/{sid}/presence", response_model=PresenceReply,
           responses=_errors(400, 401, 403, 404, 503))
    async def presence(sid: SID, who: Who) -> PresenceReply:
        """Who is connected to the session now (its owner, or ``sessions:read``)."""
        need(who, "", sid)
        await _unavailable(_owned_or(who, bus, sid, "sessions:read"))
        p = await _unavailable(api.presence(sid))
        return PresenceReply(session=sid, connected=p.connected, voice=p.voice,
                             operator=p.operator,
                             devices=[DeviceItem(node=d.node, since=d.since,
                                                 user_agent=d.user_agent) for d in p.devices])

    return r


async def _unavailable(call: Awaitable[T]) -> T:
    """Await a Redis call; an outage is a 503 with Retry-After (never a traceback)."""
    try:
        return await call
    except BusUnavailable as exc:
        raise HTTPException(503, exc.message, {"Retry-After": "1"}) from None
    except REDIS_DOWN as exc:  # a plain read (session_owner) is not mapped by the bus
        if not is_down(exc):
            raise
        raise HTTPException(503, BusUnavailable().message, {"Retry-After": "1"}) from None
