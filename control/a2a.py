"""The A2A server (docs/a2a.md): every registered agent as an A2A agent on the control plane,
built on the official ``a2a-sdk`` (JSON-RPC binding, protocol 1.0 with the 0.3 method names
too).

An A2A context is an Agentia session ``a2a:<contextId>`` owned by the caller's ``sub``; each
message is a turn submitted as a WebSocket ``send`` is (:meth:`Bus.submit`, source ``a2a``),
and the task follows that turn in the session log: the running turn's text (its partial
buffer, what a resume reads) streams as artifact chunks; ``reply`` completes the task,
``cancelled`` cancels it, ``turn_error`` fails it (control/a2a_turns.py). Cancelling the task
cancels the turn on the bus (:meth:`Bus.cancel`), as a ``cancel`` frame does. The replica
following a task holds its lease; the request handler (control/a2a_handler.py) answers
``tasks/get``, ``tasks/cancel`` and ``tasks/resubscribe`` on any replica from the task store
and the turn's log.

Routes (the agent's name in the path, or none for the default agent)::

    GET  /.well-known/agent-card.json, /.well-known/agent.json      default agent's card
    POST /a2a                                                       default agent (JSON-RPC)
    GET  /a2a/{agent}/.well-known/agent-card.json (and agent.json)  that agent's card
    POST /a2a/{agent}                                               that agent (JSON-RPC)
"""

from __future__ import annotations

import time
from typing import Any

from a2a.helpers.proto_helpers import new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import create_jsonrpc_routes
from a2a.server.tasks import TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
    Task,
)
from a2a.utils.constants import PROTOCOL_VERSION_0_3, PROTOCOL_VERSION_1_0
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.authentication import SimpleUser

from agentia.codes import AgentiaError
from control import a2a_turns as T
from control.a2a_handler import Handler
from control.a2a_store import RENEW_S, RedisTaskStore
from gateway.auth import AuthError, Verifier, token_from
from sessions import keys as K
from sessions.bus import Bus, Forbidden, Missing
from sessions.errors import AgentMismatch, UnknownAgent
from sessions.opening import Limits, Refused

_SESSION_CODES = {4502: "new_sessions_rate", 4503: "too_many_sessions"}
MAX_BODY = 256 * 1024
"""Bytes of one JSON-RPC request at most (else 413, read no further)."""
MAX_TEXT_CHARS = 16_000
"""Characters of a message's text at most: a ``send``'s default (``AGENTIA_MAX_TEXT_CHARS``)."""
CARD_PATHS = ("/.well-known/agent-card.json", "/.well-known/agent.json")
BEARER = "bearer"


def card_for(info: dict[str, Any], url: str) -> AgentCard:
    """The agent card of a registered agent (``info``: one entry of :meth:`Bus.agents`)."""
    skills = [AgentSkill(id=t["name"], name=t["name"], description=t.get("description", "")
                         or t["name"], tags=["tool"]) for t in info.get("tools", [])]
    if not skills:  # a card needs at least one skill: the agent's conversation itself
        skills = [AgentSkill(id="chat", name="chat", tags=["chat"],
                             description=info.get("description", "") or "conversation")]
    return AgentCard(
        name=info["name"], description=info.get("description", "") or info["name"],
        version="0.1.0",
        # one endpoint speaks both (create_jsonrpc_routes(enable_v0_3_compat=True)); the 0.3
        # interface also puts the 0.3 fields (url, protocolVersion, ...) in the served card
        supported_interfaces=[AgentInterface(url=url, protocol_binding="JSONRPC",
                                             protocol_version=v)
                              for v in (PROTOCOL_VERSION_1_0, PROTOCOL_VERSION_0_3)],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=["text/plain"], default_output_modes=["text/plain"],
        skills=skills,
        security_schemes={BEARER: SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(
            scheme="Bearer", bearer_format="JWT",
            description="the control plane's JWT (docs/security.md); the token's sub owns "
                        "the A2A contexts (sessions a2a:<contextId>)"))},
        security_requirements=[SecurityRequirement(schemes={BEARER: StringList()})],
    )


class TurnExecutor(AgentExecutor):
    """Runs each A2A message as a turn of one agent on the bus."""

    def __init__(self, bus: Bus, agent: str, limits: Limits, store: RedisTaskStore) -> None:
        self.bus, self.agent, self.limits, self.store = bus, agent, limits, store

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Run the message's turn. The task's lease is taken before the task is first saved
        and renewed while the turn is followed; once it lapses (this replica died or stopped,
        or the task ended here) any replica may settle the task from its turn's log
        (:meth:`Handler.settle`)."""
        msg = context.message
        assert msg is not None and context.task_id and context.context_id
        await self.store.lease(context.task_id, context.call_context)
        task = context.current_task or new_task_from_user_message(msg)
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        up = TaskUpdater(event_queue, task.id, task.context_id)
        user = context.call_context.user.user_name
        sid = f"a2a:{task.context_id}"
        text = context.get_user_input().strip()
        if not K.SESSION_ID_RE.fullmatch(sid):
            return await up.failed(_said(up, "contextId must be [A-Za-z0-9_.:-]{1,60}"))
        if not text:
            return await up.failed(_said(up, "the message has no text part"))
        if len(text) > MAX_TEXT_CHARS:
            return await up.failed(_said(up, f"the text is over {MAX_TEXT_CHARS} characters"))
        try:
            refused = await self._open(sid, user)
            if refused:
                return await up.failed(_said(up, refused))
            sub = await self.bus.submit(sid, task.id, text, user=user, source="a2a")
            await self.bus.touch_user_sessions({(user, sid): time.time()})  # /v1/sessions
        except Forbidden:
            return await up.failed(_said(up, "this context belongs to another user"))
        except (UnknownAgent, AgentMismatch) as exc:
            return await up.failed(_said(up, str(exc) or "this context is another agent's"))
        except AgentiaError as exc:
            return await up.failed(_said(up, exc.message))
        # the turn in the task's status: what tasks/cancel cancels, on any replica
        await up.start_work(up.new_agent_message(
            [new_text_part(f"turn {sub.offset} of session {sid}")],
            {T.TURN_KEY: {"session": sid, "turn": sub.offset}}))
        # tasks/cancel (here or on another replica) or a shutdown cancels this: the turn goes
        # on in its session unless tasks/cancel cancelled it (Handler.on_cancel_task)
        await self._follow(up, context.call_context, sid, sub.offset)

    async def _open(self, sid: str, user: str) -> str:
        """Open the user's session; a new one is first counted against the user's session
        limits (sessions/opening.py), as an edge and the voice route do. Returns why it was
        refused ("" if not)."""
        lim = self.limits
        if lim.sessions_per_hour or lim.sessions:
            try:
                await self.bus.open_session(sid, user, "", create=False, agent=self.agent)
                return ""
            except Missing:
                pass
            [refusal] = await self.bus.user_limits(lim).reserve([(user, sid)])
            if isinstance(refusal, Refused):
                return f"{_SESSION_CODES[int(refusal.code)]}: {refusal.reason}"
            if refusal is not None:
                raise refusal
        await self.bus.open_session(sid, user, "", agent=self.agent)
        return ""

    async def _follow(self, up: TaskUpdater, call: ServerCallContext, sid: str,
                      turn: int) -> None:
        """Map the turn's log events and partial text to task events until it ends, renewing
        the task's lease every :data:`RENEW_S`."""
        renewed = time.monotonic()
        async for step in T.follow(self.bus, sid, turn):
            if step.end is not None:
                status, reply = T.end_status(Task(id=up.task_id, context_id=up.context_id),
                                             step.end)
                if reply is not None:
                    await up.add_artifact([new_text_part(reply)], T.ARTIFACT, T.ARTIFACT,
                                          append=False, last_chunk=True)
                return await up.update_status(status.state, status.message
                                              if status.HasField("message") else None)
            if step.text:
                await up.add_artifact([new_text_part(step.text)], T.ARTIFACT, T.ARTIFACT,
                                      append=step.append)
            if time.monotonic() - renewed >= RENEW_S:
                await self.store.lease(up.task_id, call)
                renewed = time.monotonic()
        await up.failed(_said(up, f"the turn did not end within {T.TURN_LIMIT_S:.0f} s"))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        """The task canceled (on this replica, which runs it); the turn is cancelled on the bus
        by :meth:`Handler.on_cancel_task`, whichever replica runs it."""
        task = context.current_task
        assert task is not None
        await TaskUpdater(event_queue, task.id, task.context_id).cancel()


def _said(up: TaskUpdater, text: str) -> Any:
    return up.new_agent_message([new_text_part(text)])


def add_a2a(app: FastAPI, bus: Bus, verifier: Verifier, public_url: str,
            limits: Limits) -> None:
    """Serve every registered agent over A2A on ``app`` (routes in the module's doc)."""
    store = RedisTaskStore(bus.redis, bus.keys.prefix)
    endpoints: dict[str, Any] = {}

    async def info_of(name: str) -> dict[str, Any] | None:
        live = await bus.agents()
        if not name:
            return live[0] if live else None
        for fresh in (False, True):
            for i in await bus.agents(fresh):
                if i["name"] == name:
                    return i
        return None

    def base(request: Request) -> str:
        return (public_url or str(request.base_url)).rstrip("/")

    async def card(request: Request) -> Response:
        name = request.path_params.get("agent", "")
        info = await info_of(name)
        if info is None:
            return JSONResponse({"detail": "no such agent"}, 404)
        url = f"{base(request)}/a2a" + (f"/{name}" if name else "")
        return JSONResponse(agent_card_to_dict(card_for(info, url)))

    async def rpc(request: Request) -> Response:
        token = token_from({k.lower(): v for k, v in request.headers.items()}, request.url.query)
        try:
            if token is None:
                raise AuthError("missing token")
            who = verifier.verify(token)
        except AuthError as exc:
            return JSONResponse({"detail": str(exc)}, 401, {"WWW-Authenticate": "Bearer"})
        info = await info_of(request.path_params.get("agent", ""))
        if info is None:
            return JSONResponse({"detail": "no such agent"}, 404)
        name = str(info["name"])
        if name not in endpoints:
            url = f"{base(request)}/a2a/{name}"
            handler = Handler(bus, TurnExecutor(bus, name, limits, store), store,
                              card_for(info, url))
            endpoints[name] = create_jsonrpc_routes(handler, "/", enable_v0_3_compat=True)[0] \
                .endpoint
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > MAX_BODY:
                return JSONResponse({"detail": f"over {MAX_BODY} bytes"}, 413)
        request._body = bytes(body)  # what the SDK's dispatcher reads
        request.scope["user"] = SimpleUser(who.user)
        return await endpoints[name](request)  # type: ignore[no-any-return]

    card_doc = dict(
        methods=["GET"], tags=["a2a"], summary="A2A agent card",
        description="The agent card (A2A 1.0 and 0.3 fields) of the default agent, or of "
                    "`{agent}`: docs/a2a.md. No token needed.",
        responses={200: {"description": "the agent card (JSON)"},
                   404: {"description": "no such agent"}})
    rpc_doc = dict(
        methods=["POST"], tags=["a2a"], summary="A2A JSON-RPC endpoint",
        description="A2A JSON-RPC 2.0 (`SendMessage`/`message/send`, `SendStreamingMessage`/"
                    "`message/stream` as SSE, `GetTask`/`tasks/get`, `CancelTask`/"
                    "`tasks/cancel`, `SubscribeToTask`/`tasks/resubscribe` as SSE) for the "
                    "default agent or `{agent}`; a message is a turn in session "
                    "`a2a:<contextId>` (docs/a2a.md). Bearer token required.",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"type": "object", "required": ["jsonrpc", "method"], "properties": {
                "jsonrpc": {"const": "2.0"}, "id": {}, "method": {"type": "string"},
                "params": {"type": "object"}}}}}}},
        responses={200: {"description": "a JSON-RPC response, or an SSE stream for "
                                        "message/stream"},
                   401: {"description": "missing or bad token"},
                   404: {"description": "no such agent"},
                   413: {"description": f"body over {MAX_BODY} bytes"}})
    for path in CARD_PATHS:
        app.add_api_route(path, card, **card_doc)  # type: ignore[arg-type]
        app.add_api_route("/a2a/{agent}" + path, card, **card_doc)  # type: ignore[arg-type]
    app.add_api_route("/a2a", rpc, **rpc_doc)  # type: ignore[arg-type]
    app.add_api_route("/a2a/{agent}", rpc, **rpc_doc)  # type: ignore[arg-type]
