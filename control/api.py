"""The control plane (``agentia api``): health, readiness, metrics, dev tokens, session history,
and the demo web page. FastAPI; OpenAPI docs at ``/docs`` (Swagger UI served from here, no CDN).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field

from agentia import PROTOCOL
from agentia import metrics as M
from agentia.settings import ApiSettings
from control.a2a import add_a2a
from control.backend import backend_router, invalid_request
from gateway.auth import AuthError, Identity, mint, token_from, verifier_for
from sessions import keys as K
from sessions.bus import Bus, connect
from sessions.opening import Limits

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
CLIENT_JS = ROOT / "clients" / "js" / "src"
"""The JS SDK (@agentia/client) the page imports, served as is at /static/agentia-client/."""
LIVEKIT_CLIENT = WEB / "node_modules" / "livekit-client" / "dist"
"""livekit-client's browser build for the page's Talk button (``npm ci`` in web/; ./dev does)."""


class TokenRequest(BaseModel):
    user: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")


class TokenReply(BaseModel):
    token: str
    user: str
    expires_in: int


class EventsReply(BaseModel):
    session: str
    epoch: str
    offset: int
    recovered: bool
    events: list[dict[str, Any]]


class SessionItem(BaseModel):
    id: str
    last_active: float


class SessionsReply(BaseModel):
    sessions: list[SessionItem]


class AgentTool(BaseModel):
    name: str
    description: str
    private: bool = Field(description="clients see only this tool's name, never its "
                                      "arguments or output")


class AgentItem(BaseModel):
    name: str
    description: str
    tools: list[AgentTool]
    default: bool = Field(description="the agent a session gets when it names none")


class AgentsReply(BaseModel):
    agents: list[AgentItem] = Field(description="in registry order; the first is the default")


def identity(request: Request) -> Identity:
    """The caller, from a Bearer token (header or ?token=), checked like the edge does."""
    token = token_from({k.lower(): v for k, v in request.headers.items()}, request.url.query)
    if token is None:
        raise HTTPException(401, "missing token", {"WWW-Authenticate": "Bearer"})
    try:
        return request.app.state.verifier.verify(token)  # type: ignore[no-any-return]
    except AuthError as exc:
        raise HTTPException(401, str(exc), {"WWW-Authenticate": "Bearer"}) from None


User = Annotated[Identity, Depends(identity)]


def create_app(s: ApiSettings) -> FastAPI:
    bus = Bus(connect(s.redis_url), prefix=s.redis_prefix, shards=s.shards)
    verifier = verifier_for(s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_watch_lag(bus))
        yield
        task.cancel()
        await bus.close()

    # Swagger UI and ReDoc from fastapi-offline's copies, not a CDN: /docs works offline
    app = FastAPIOffline(title="Agentia control plane", version="0.1.0", lifespan=lifespan)
    app.state.verifier = verifier
    origins = s.origins()  # AGENTIA_ALLOWED_ORIGINS, as the edges check it
    # Bearer tokens, never cookies: no credentials mode, so "*" exposes nothing ambient.
    app.add_middleware(CORSMiddleware,
                       allow_origins=["*"] if origins is None else sorted(origins),
                       allow_methods=["GET", "POST", "DELETE"],
                       allow_headers=["Authorization", "Content-Type"])
    if s.voice:  # LiveKit's libraries are imported only when voice is on
        from agentia.settings import from_env
        from voice.routes import voice_router
        from voice.settings import VoiceSettings

        app.include_router(voice_router(bus, from_env(VoiceSettings), identity))
    app.include_router(backend_router(bus, identity))
    if s.dapr_topic_in:  # docs/dapr.md: the sidecar delivers a topic's messages here
        from control.dapr import dapr_router

        app.include_router(dapr_router(bus, s))
    app.add_exception_handler(RequestValidationError, invalid_request)
    add_a2a(app, bus, verifier, s.public_url,  # docs/a2a.md; new sessions as an edge counts
            Limits(0, s.max_sessions_per_hour, s.max_sessions_per_user, s.new_session_ttl_s))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive (Kubernetes liveness)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Redis answers, the consumer group exists, workers and edges heartbeat."""
        state = await _readiness(bus)
        ok = state["redis"] and state["groups"] and state["workers"] > 0
        return JSONResponse(state, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        body, ctype = M.exposition()
        return Response(body, media_type=ctype)

    @app.get("/v1/config")
    async def config() -> dict[str, Any]:
        return {"ws_urls": [u.strip() for u in s.ws_urls.split(",") if u.strip()],
                "protocol": PROTOCOL, "voice": s.voice, "dev_tokens": s.dev_tokens}

    @app.post("/v1/dev/token", response_model=TokenReply)
    async def dev_token(req: TokenRequest) -> TokenReply:
        """Mint a token for any user: only with AGENTIA_DEV_TOKENS=true (never in production)."""
        if not s.dev_tokens:
            raise HTTPException(404, "dev tokens are disabled")
        ttl = 3600
        return TokenReply(token=mint(s.jwt_secret, req.user, ttl), user=req.user,
                          expires_in=ttl)

    @app.get("/v1/agents", response_model=AgentsReply)
    async def agents(who: User) -> AgentsReply:
        """The agents this deployment runs (published by their workers, docs/agents.md):
        what a client may pass as ``?agent=NAME`` on the WebSocket URL."""
        live = await bus.agents()
        return AgentsReply(agents=[AgentItem(
            name=a["name"], description=a.get("description", ""), default=i == 0,
            tools=[AgentTool(**t) for t in a.get("tools", [])]) for i, a in enumerate(live)])

    @app.get("/v1/sessions", response_model=SessionsReply)
    async def sessions(who: User) -> SessionsReply:
        rows = await bus.user_sessions(who.user, 100)
        return SessionsReply(sessions=[SessionItem(id=sid, last_active=ts) for sid, ts in rows])

    @app.get("/v1/sessions/{sid}/events", response_model=EventsReply)
    async def events(sid: str, who: User, after: Annotated[int, Query(ge=0)] = 0,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> EventsReply:
        """The session log after ``after``, for its owner or a ``sessions:read`` service
        token (the same events as a resume); 404 once the session is deleted."""
        if not K.SESSION_ID_RE.fullmatch(sid):
            raise HTTPException(400, "bad session id")
        owner = await bus.session_owner(sid)
        if owner is None:
            raise HTTPException(404, "no such session")
        if owner != who.user and not who.can("sessions:read"):
            raise HTTPException(403, "this session belongs to another user")
        r = await bus.replay(sid, after, None, limit)
        return EventsReply(session=sid, epoch=r.epoch, offset=r.offset, recovered=r.recovered,
                           events=[{"offset": o, **orjson.loads(e)} for o, e in r.events])

    if WEB.is_dir():
        if LIVEKIT_CLIENT.is_dir():  # before /static: the first mount that matches serves
            app.mount("/static/vendor/livekit-client", StaticFiles(directory=LIVEKIT_CLIENT),
                      name="livekit-client")
        if CLIENT_JS.is_dir():
            app.mount("/static/agentia-client", StaticFiles(directory=CLIENT_JS),
                      name="agentia-client")
        app.mount("/static", StaticFiles(directory=WEB), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(WEB / "index.html")

    return app


async def _readiness(bus: Bus) -> dict[str, Any]:
    state: dict[str, Any] = {"redis": False, "groups": False, "workers": 0, "edges": 0}
    try:
        await bus.ping()
        state["redis"] = True
        names = [str(a["name"]) for a in await bus.agents()] or [K.DEFAULT_AGENT]
        state["agents"] = names
        state["groups"] = all([await bus.has_group(0, a) for a in names])
        fresh = time.time() - K.NODE_TTL
        state["workers"] = await bus.count_workers(fresh)
        # voice workers register a node per call (voice-<hex>): calls, not edges
        alive = await bus.live_nodes(fresh)
        state["voice_calls"] = sum(1 for n in alive if n.startswith("voice-"))
        state["edges"] = len(alive) - state["voice_calls"]
    except Exception as exc:
        state["error"] = str(exc)
    return state


async def _watch_lag(bus: Bus) -> None:
    """Inbound lag per agent and shard for /metrics (and the KEDA scaler's view of the
    same)."""
    names = [K.DEFAULT_AGENT]
    while True:
        with contextlib.suppress(Exception):
            names = [str(a["name"]) for a in await bus.agents()] or [K.DEFAULT_AGENT]
        for agent in names:
            for shard in range(bus.shards):
                with contextlib.suppress(Exception):
                    lag = await bus.shard_lag(shard, agent)
                    if lag is not None:
                        M.INBOUND_LAG.labels(agent, str(shard)).set(lag)
        await asyncio.sleep(5)


def run(s: ApiSettings) -> None:
    import socket

    import uvicorn

    from agentia.ports import busy_line, reason

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((s.host, s.api_port))
    except OSError as exc:
        print(busy_line("agentia api", "control plane", s.host, s.api_port, reason(exc),
                        "--port"), file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    sock.listen(1024)  # connections queue from now on, before the loop starts accepting
    config = uvicorn.Config(create_app(s), log_level="warning", loop="uvloop", ws="none",
                            lifespan="on", access_log=False)
    print(f"AGENTIA_API_READY port={sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
