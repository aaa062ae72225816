"""Settings per process kind, from ``AGENTIA_*`` environment variables, validated at start."""

from __future__ import annotations

import math
import os
import re
import resource
from dataclasses import dataclass, fields
from typing import Any

NODE_TTL_RANGE = (3, 3600)  # AGENTIA_NODE_TTL's bounds, s (sessions/keys.py reads it too)

FD_RESERVE = 1_000
"""File descriptors kept free for Redis connections, logs and sockets mid-handshake."""
DEV_SECRET = "agentia-dev-secret-change-me-in-production"
"""Public, so only accepted with ``AGENTIA_DEV=true`` (``agentia up`` sets it)."""
MIN_SECRET_BYTES = 32
"""Shortest HS256 secret a token-verifying process starts with outside development mode."""


_DAPR_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
"""A Dapr component or topic name as Agentia accepts it (it goes into sidecar URLs)."""
_BOOLS = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False}


class SettingsError(ValueError):
    pass


def _env(name: str, default: Any, cast: type) -> Any:
    raw = os.environ.get(f"AGENTIA_{name.upper()}")
    if raw is None or raw == "":
        return default
    try:
        if cast is bool:
            if raw.lower() not in _BOOLS:
                raise ValueError(raw)
            return _BOOLS[raw.lower()]
        value = cast(raw)
        if cast is float and not math.isfinite(value):
            raise ValueError(raw)
        return value
    except ValueError:
        var = f"AGENTIA_{name.upper()}"
        raise SettingsError(f"{var}={raw!r} is not a valid {cast.__name__}") from None


def from_env(cls: Any, **overrides: Any) -> Any:
    """Build a settings dataclass: explicit overrides, then AGENTIA_<FIELD>, then defaults."""
    kw = {}
    for f in fields(cls):
        if f.name in overrides and overrides[f.name] is not None:
            kw[f.name] = overrides[f.name]
        else:
            kw[f.name] = _env(f.name, f.default, type(f.default))
    obj = cls(**kw)
    obj.validate()
    return obj


@dataclass(slots=True)
class Common:
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "agentia"
    shards: int = 8
    log_level: str = "info"
    log_json: bool = False
    redis_wait_replicas: int = 0
    """Replicas that must confirm (Redis WAIT) a turn or event before any client sees it, so
    a failover cannot lose it; 0 = off (replication stays asynchronous). docs/redis-cluster.md"""
    redis_wait_ms: int = 1000
    """How long WAIT may take; fewer confirmations by then: a retryable error."""
    new_session_ttl_s: int = 3600
    """A session that never got a turn expires this long after it was last opened; its first
    turn gives it the normal 7 days (sessions/keys.py SESSION_TTL)."""
    max_sessions_per_hour: int = 200
    """Sessions one user may create per hour (sliding; Redis, sessions/opening.py), however
    they are created (a connection or a voice call); 0 = no limit."""
    max_sessions_per_user: int = 1000
    """Live sessions of one user (created and not expired); 0 = no limit."""
    webhook_url: str = ""
    """Where webhooks are POSTed (docs/backend.md "Webhooks"); empty = webhooks off. Every
    process that appends events (edges, workers, the control plane) reads it: when set,
    they queue the events of ``webhook_events`` in the outbox shards."""
    webhook_events: str = "user,reply,turn_error,call,message,takeover"
    """Comma list of the event types that are POSTed."""
    webhook_shards: int = 4
    """Outbox shard streams (hash-tagged, a session's id picks its shard)."""
    presence_events: bool = False
    """Write ``presence`` events to the session log when a device or an operator connects or
    leaves and when a voice call starts or ends (edges and voice read it;
    sessions/presence_events.py)."""
    dapr_pubsub: str = "agentia-pubsub"
    """The Dapr pub/sub component both topics use (docs/dapr.md)."""
    dapr_topic_events: str = ""
    """Dapr topic session events are published to (``agentia dapr-publish``); empty = off.
    Every process that appends reads it: when set, they queue the events of ``dapr_events``
    in the Dapr outbox shards."""
    dapr_events: str = "user,reply,turn_error,call,message,takeover"
    """Comma list of the event types published to ``dapr_topic_events``."""
    node_ttl: int = 15
    """Seconds after its last heartbeat that a node (an edge, a voice call) counts as dead
    (sessions/keys.py ``NODE_TTL``, which reads the same variable)."""

    def validate(self) -> None:
        if not 1 <= self.shards <= 1024:
            raise SettingsError("AGENTIA_SHARDS must be between 1 and 1024")
        if not NODE_TTL_RANGE[0] <= self.node_ttl <= NODE_TTL_RANGE[1]:
            raise SettingsError("AGENTIA_NODE_TTL must be between 3 and 3600 (seconds)")
        if not 0 <= self.redis_wait_replicas <= 16 or self.redis_wait_ms < 1:
            raise SettingsError("AGENTIA_REDIS_WAIT_REPLICAS must be between 0 and 16 and "
                                "AGENTIA_REDIS_WAIT_MS at least 1")
        if not 60 <= self.new_session_ttl_s <= 7 * 24 * 3600:
            raise SettingsError("AGENTIA_NEW_SESSION_TTL_S must be between 60 and 604800")
        if min(self.max_sessions_per_hour, self.max_sessions_per_user) < 0:
            raise SettingsError("AGENTIA_MAX_SESSIONS_PER_HOUR and AGENTIA_MAX_SESSIONS_PER_USER "
                                "must be 0 (no limit) or more")
        if self.webhook_url and not self.webhook_url.startswith(("http://", "https://")):
            raise SettingsError("AGENTIA_WEBHOOK_URL must be an http:// or https:// URL")
        if not 1 <= self.webhook_shards <= 256:
            raise SettingsError("AGENTIA_WEBHOOK_SHARDS must be between 1 and 256")
        for name, value in (("PUBSUB", self.dapr_pubsub), ("TOPIC_EVENTS",
                                                            self.dapr_topic_events)):
            if value and not _DAPR_NAME.fullmatch(value):
                raise SettingsError(f"AGENTIA_DAPR_{name} must be 1-128 of A-Z a-z 0-9 . _ -")

    def webhook_types(self) -> frozenset[str]:
        """The event types queued for webhooks; empty when webhooks are off."""
        if not self.webhook_url:
            return frozenset()
        return frozenset(t.strip() for t in self.webhook_events.split(",") if t.strip())

    def dapr_types(self) -> frozenset[str]:
        """The event types queued for the Dapr topic; empty when publishing is off."""
        if not self.dapr_topic_events:
            return frozenset()
        return frozenset(t.strip() for t in self.dapr_events.split(",") if t.strip())


def dapr_port(explicit: int, name: str, default: int) -> int:
    """A sidecar port: ``explicit`` when set (not 0), else Dapr's own ``name`` variable (the
    sidecar injector sets ``DAPR_HTTP_PORT`` / ``DAPR_GRPC_PORT``), else ``default``."""
    if explicit:
        return explicit
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a port number") from None


@dataclass(slots=True)
class Auth(Common):
    """Settings of every process that verifies tokens (edge, control plane)."""

    jwt_secret: str = DEV_SECRET
    jwt_public_key: str = ""
    jwt_algorithms: str = "HS256"
    dev: bool = False
    """Development mode: the public default (or a short) HS256 secret is accepted."""
    allowed_origins: str = "*"
    """Comma list of browser origins (``https://chat.example.com``) allowed to open a WebSocket
    and to call the API cross-origin; ``*`` allows any. Requests without Origin (not from a
    browser) are not affected."""

    def validate(self) -> None:
        Common.validate(self)
        hs = any(a.strip().startswith("HS") for a in self.jwt_algorithms.split(","))
        if hs and not self.dev:
            check_secret(self.jwt_secret)

    def origins(self) -> frozenset[str] | None:
        """The allowed origins, normalised; None when any origin is allowed."""
        allowed = {o.strip().rstrip("/").lower() for o in self.allowed_origins.split(",")}
        allowed.discard("")
        return None if "*" in allowed else frozenset(allowed)


def check_secret(secret: str) -> None:
    """Refuse the public default and short HS256 secrets (anyone could mint tokens)."""
    fix = (f"set a secret of at least {MIN_SECRET_BYTES} bytes "
           "(or AGENTIA_DEV=true for local development)")
    if secret == DEV_SECRET:
        raise SettingsError(f"AGENTIA_JWT_SECRET is the public default; {fix}")
    size = len(secret.encode())
    if size < MIN_SECRET_BYTES:
        raise SettingsError(f"AGENTIA_JWT_SECRET is only {size} bytes; {fix}")


@dataclass(slots=True)
class ApiSettings(Auth):
    host: str = "127.0.0.1"
    api_port: int = 8780
    ws_urls: str = "ws://127.0.0.1:8765/v1/ws"
    dev_tokens: bool = False
    voice: bool = False
    """Serve ``POST /v1/voice/sessions`` (LiveKit settings: ``voice.settings.VoiceSettings``)."""
    public_url: str = ""
    """The control plane's URL as A2A clients reach it (``https://api.example.com``), for the
    agent cards' endpoint URLs (docs/a2a.md); empty: the URL each card request came to."""
    dapr_topic_in: str = ""
    """Dapr topic whose CloudEvents are posted into sessions as ``message`` events
    (``GET /dapr/subscribe``, ``POST /dapr/messages``, control/dapr.py); empty = off."""
    dapr_app_token: str = ""
    """When set, Dapr's calls to the control plane must carry it in ``dapr-api-token`` (the
    sidecar's ``APP_API_TOKEN``); else 401. Required (16 bytes or more) with
    ``dapr_topic_in`` outside development mode."""

    def validate(self) -> None:
        Auth.validate(self)
        if self.dapr_topic_in and not _DAPR_NAME.fullmatch(self.dapr_topic_in):
            raise SettingsError("AGENTIA_DAPR_TOPIC_IN must be 1-128 of A-Z a-z 0-9 . _ -")
        if self.dapr_topic_in and not self.dev and len(self.dapr_app_token.encode()) < 16:
            # /dapr/messages posts into any session: never open on a public port
            raise SettingsError("AGENTIA_DAPR_TOPIC_IN needs AGENTIA_DAPR_APP_TOKEN (at least "
                                "16 bytes, the sidecar's APP_API_TOKEN) outside AGENTIA_DEV")


WORKER_FDS_PER_TURN = 1
"""A running turn holds one socket to its model (the Redis pool is shared)."""
MAX_CONCURRENCY = 10_000


def worker_redis_pool(concurrency: int) -> int:
    """Redis connections of a worker: 64, or a quarter of its turns for more than 256 (a
    command holds a connection for one round trip; 1,000 turns flushing every 40 ms keep
    a few dozen busy, and the pool's 5 s wait must not be reached when the loop is busy)."""
    return max(64, concurrency // 4)


def ensure_fds(needed: int) -> int:
    """Raise this process's soft open-file limit towards ``needed`` (up to the hard limit);
    returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


@dataclass(slots=True)
class WorkerSettings(Common):
    agent: str = ""
    """The agents to run, comma-separated ``NAME=pkg.module:attr`` (``--agent``, repeatable;
    a bare ``pkg.module:attr`` is named ``default``). Empty, with no ``agents`` file: the
    demo setup (``demo``, then ``triage``). docs/agents.md"""
    agents: str = ""
    """A TOML file of ``[[agents]]`` (``--agents``): registered before the ``agent`` ones."""
    only_agents: str = ""
    """Comma list of registered agents this worker runs (``--only``); empty: all of them.
    Give every worker the same file and pick with this, so the registry's order is shared."""
    concurrency: int = 1_000
    """Turns one worker runs at once: a turn mostly waits on its model (a worker keeps 1,000
    streams at 50 tokens/s on 0.65 of a core, docs/benchmarks.md "Session 11 end")."""
    lease_ms: int = 30_000
    max_attempts: int = 3
    coalesce_ms: int = 40
    turn_timeout_s: float = 300.0
    approval_timeout_s: float = 600.0
    """A tool call waiting for a person's approval longer than this is rejected."""
    grace_s: float = 10.0
    model: str = "gpt-4o-mini"
    model_base_url: str = ""
    model_read_ms: int = 40
    """The least time between two reads of an OpenAI-compatible model's stream while it
    streams text: the tokens that come meanwhile cost the worker one read, not one each
    (docs/architecture.md "A worker's turns"); 0 reads every token as it comes."""
    model_client: str = "lean"
    """How an OpenAI-compatible model's stream is read: ``lean`` (sessions/lean_model.py: the
    same request and events, the stream's bytes decoded from the wire up without the client's
    per-chunk work) or ``openai`` (the OpenAI client and the Agents SDK's chunk handling)."""
    direct_run: bool = True
    """Text replies of agents that allow it run without the SDK's Runner
    (sessions/direct_run.py); off: every turn through the Runner."""
    demo_word_delay: float = 0.03
    tracing: bool = False
    worker_gc_gen0_threshold: int = 25_000  # young collections, agentia/collector.py
    worker_gc_gen1_threshold: int = 0
    worker_internal_host: str = "127.0.0.1"
    worker_internal_port: int = -1
    """The worker's /healthz, /readyz and /metrics (agentia/probes.py); -1 = none (the
    default: a worker serves no port), 0 = a free port (its READY line says which)."""
    mcp_ping_s: float = 10.0
    """How often each MCP server is probed (a failed tool call probes at once)."""
    memory: str = "redis"
    """Where the agent's conversation memory lives: ``redis`` (sessions/memory.py) or ``dapr``
    (ended turns in ``dapr_statestore`` through the sidecar, the last one in the Redis journal;
    sessions/memory_dapr.py; needs the ``dapr`` extra). docs/dapr.md"""
    dapr_statestore: str = "agentia-state"
    """The Dapr state store component of ``memory=dapr``."""
    dapr_grpc_port: int = 0
    """The sidecar's gRPC port; 0 = ``$DAPR_GRPC_PORT``, else 50001 (Dapr's default)."""

    def validate(self) -> None:
        Common.validate(self)
        if self.memory not in ("redis", "dapr"):
            raise SettingsError("AGENTIA_MEMORY must be redis or dapr")
        if self.memory == "dapr":
            if not _DAPR_NAME.fullmatch(self.dapr_statestore):
                raise SettingsError("AGENTIA_DAPR_STATESTORE must be 1-128 of A-Z a-z 0-9 . _ -")
            self.dapr_grpc_port = dapr_port(self.dapr_grpc_port, "DAPR_GRPC_PORT", 50001)
        if not -1 <= self.worker_internal_port <= 65535:
            raise SettingsError("AGENTIA_WORKER_INTERNAL_PORT must be -1 (none), 0 (a free "
                                "port) or a port number")
        if self.worker_gc_gen0_threshold < 0 or not 0 <= self.worker_gc_gen1_threshold <= 1000:
            raise SettingsError("AGENTIA_WORKER_GC_GEN0_THRESHOLD must be 0 or more and "
                                "AGENTIA_WORKER_GC_GEN1_THRESHOLD between 0 and 1000")
        if not 0.1 <= self.mcp_ping_s <= 3600:
            raise SettingsError("AGENTIA_MCP_PING_S must be between 0.1 and 3600")
        if self.concurrency < 1 or self.max_attempts < 1 or self.lease_ms < 1000:
            raise SettingsError("concurrency >= 1, max_attempts >= 1, lease_ms >= 1000 required")
        if not 0 <= self.model_read_ms <= 1000:
            raise SettingsError("AGENTIA_MODEL_READ_MS must be between 0 and 1000")
        if self.model_client not in ("openai", "lean"):
            raise SettingsError("AGENTIA_MODEL_CLIENT must be openai or lean")
        if not 0 < self.approval_timeout_s <= 7 * 24 * 3600:  # the pause record's life
            raise SettingsError("AGENTIA_APPROVAL_TIMEOUT_S must be above 0 and at most 604800")
        if self.concurrency > MAX_CONCURRENCY:
            raise SettingsError(f"AGENTIA_CONCURRENCY must be at most {MAX_CONCURRENCY:,}; "
                                "run more worker processes")
        needed = (self.concurrency * WORKER_FDS_PER_TURN
                  + worker_redis_pool(self.concurrency) + 100)
        soft = ensure_fds(needed)
        if soft < needed:
            raise SettingsError(
                f"AGENTIA_CONCURRENCY={self.concurrency} needs about {needed} open files and "
                f"this process may have {soft}: raise ulimit -n (LimitNOFILE) or lower it")
