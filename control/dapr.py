"""A Dapr topic into sessions (docs/dapr.md "A topic into sessions"): the control plane is a
Dapr app. ``GET /dapr/subscribe`` tells the sidecar to deliver ``AGENTIA_DAPR_TOPIC_IN`` of
``AGENTIA_DAPR_PUBSUB`` to ``POST /dapr/messages``; each CloudEvent whose ``data`` is
``{session, text, role, by}`` appends a ``message`` event exactly as
``POST /v1/sessions/{id}/messages`` does (sessions/backend_redis.py), once per CloudEvent id
(among the session's last ``CLIENT_IDS_KEPT`` remembered ids, atomically in the post).

The answer is one of the three statuses Dapr understands (always HTTP 200, so the sidecar
reads the status rather than guessing from a code):

* ``SUCCESS``: posted, or posted already (a redelivery of the same ``id``);
* ``RETRY``: Redis unavailable; Dapr delivers it again;
* ``DROP``: the event can never succeed (not JSON, no ``id``, a bad ``data``, an unknown
  session); logged at most once every 10 s, Dapr's dead-letter topic gets it if one is set.

The routes exist only when ``AGENTIA_DAPR_TOPIC_IN`` is set. With ``AGENTIA_DAPR_APP_TOKEN``
set (required outside ``AGENTIA_DEV``: the control plane's port is often public), both need it
in ``dapr-api-token`` (the header the sidecar sends when it runs with ``APP_API_TOKEN``);
else 401.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Literal

import orjson
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field, ValidationError, field_validator

from agentia.codes import BusUnavailable
from agentia.settings import ApiSettings
from control.backend import MessageRequest
from sessions import keys as K
from sessions.backend_redis import Backend
from sessions.bus import REDIS_DOWN, Bus, is_down

log = logging.getLogger("agentia.dapr")
ROUTE = "/dapr/messages"
MAX_BODY = 64 * 1024
"""A CloudEvent larger than this is dropped (a message's text is at most 16,000 characters)."""
Status = Literal["SUCCESS", "RETRY", "DROP"]


class DaprMessage(MessageRequest):
    """The ``data`` of an inbound CloudEvent: a message for a session."""

    session: str = Field(max_length=64, description="[A-Za-z0-9_.:-]{1,64}")
    by: str = Field(default="dapr", min_length=1, max_length=128)

    @field_validator("session")
    @classmethod
    def _session(cls, sid: str) -> str:
        # fullmatch: a pattern= would accept an id around a valid part ("a b", "x/{y}")
        if not K.SESSION_ID_RE.fullmatch(sid):
            raise ValueError("bad session id")
        return sid


class Subscription(BaseModel):
    pubsubname: str
    topic: str
    route: str


class DaprReply(BaseModel):
    status: Status


class _Quiet:
    """At most one log line per kind every 10 s (a publisher sending garbage in a loop)."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def warn(self, kind: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last.get(kind, -1e9) >= 10:
            self.last[kind] = now
            log.warning(msg, *args)


def _parse(body: bytes) -> tuple[str, DaprMessage] | str:
    """(the CloudEvent's id, its message), or why it is dropped."""
    if len(body) > MAX_BODY:
        return "larger than 64 KiB"
    try:
        ce = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "not JSON"
    if not isinstance(ce, dict) or not isinstance(ce.get("id"), str) or not ce["id"]:
        return "not a CloudEvent with an id"
    data = ce.get("data")
    if isinstance(data, str):  # a publisher that sent its JSON as a string
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError:
            return "data is not JSON"
    try:
        return ce["id"], DaprMessage.model_validate(data)
    except ValidationError as exc:
        return f"bad data ({exc.error_count()} errors)"


def dapr_router(bus: Bus, s: ApiSettings) -> APIRouter:
    api, quiet = Backend(bus), _Quiet()
    token = s.dapr_app_token.encode()
    r = APIRouter(prefix="/dapr", tags=["dapr"])

    def check(request: Request) -> None:
        if token and not hmac.compare_digest(
                request.headers.get("dapr-api-token", "").encode(), token):
            raise HTTPException(401, "missing or wrong dapr-api-token")

    @r.get("/subscribe", response_model=list[Subscription])
    async def subscribe(request: Request) -> list[Subscription]:
        """The sidecar's programmatic subscription: ``AGENTIA_DAPR_TOPIC_IN`` to
        ``/dapr/messages`` (none when it is unset)."""
        check(request)
        if not s.dapr_topic_in:
            return []
        return [Subscription(pubsubname=s.dapr_pubsub, topic=s.dapr_topic_in, route=ROUTE)]

    @r.post("/messages", response_model=DaprReply)
    async def messages(request: Request) -> DaprReply:
        """A CloudEvent of ``AGENTIA_DAPR_TOPIC_IN``: its ``data``
        (``{session, text, role, by}``) becomes a ``message`` event of the session."""
        check(request)
        parsed = _parse(await request.body())
        if isinstance(parsed, str):
            quiet.warn("drop", "dapr: inbound event dropped: %s", parsed)
            return DaprReply(status="DROP")
        event_id, m = parsed
        # among the session's remembered client ids (sends' too): namespaced, bounded
        key = "dapr:" + hashlib.blake2b(event_id.encode(), digest_size=12).hexdigest()
        try:
            posted = await api.post_message_once(m.session, m.role, m.text, m.by, key)
        except BusUnavailable:
            return DaprReply(status="RETRY")
        except REDIS_DOWN as exc:
            if not is_down(exc):
                raise
            return DaprReply(status="RETRY")
        if posted is None:
            quiet.warn("unknown", "dapr: inbound event for an unknown session dropped")
            return DaprReply(status="DROP")
        return DaprReply(status="SUCCESS")

    return r

