"""Prometheus metrics, shared by every process kind.

Multi-process mode: when ``PROMETHEUS_MULTIPROC_DIR`` is set (``agentia up`` sets it; in
Kubernetes, an emptyDir shared by a pod's processes), each process writes its samples there and
``/metrics`` on the control plane (or any edge) aggregates them all. Without it, each process
serves its own.

The edge's hot path never touches these objects: it counts in a plain ``Counter`` and
:func:`sync` moves the deltas here once a second.
"""

from __future__ import annotations

import os
from collections import Counter as Tally

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from agentia.codes import ErrorCode

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

CONNECTIONS = Gauge("agentia_connections", "Open WebSocket connections",
                    multiprocess_mode="livesum")
HANDSHAKES = Counter("agentia_handshakes_total", "Opening handshakes by result", ["result"])
FRAMES = Counter("agentia_frames_total", "WebSocket frames", ["direction"])
BYTES = Counter("agentia_bytes_total", "WebSocket payload bytes", ["direction"])
CLOSES = Counter("agentia_closes_total", "Connections closed by the edge, by reason",
                 ["reason"])
FELL_BEHIND = Counter("agentia_fell_behind_total",
                      "Live log events a connection had no send budget for: it fell behind "
                      "and fills from the session log at its client's pace")
DROPPED = Counter("agentia_dropped_frames_total",
                  "Chunks, partials and interim transcripts a connection had no send budget "
                  "for: dropped for it (the next partial or the turn's end brings the text back)",
                  ["kind"])
TURNS = Counter("agentia_turns_total", "Turns by outcome", ["outcome"])
FIRST_DELTA = Histogram("agentia_time_to_first_delta_seconds",
                        "From a turn's acceptance to its first delta", buckets=_LATENCY)
TURN_TIME = Histogram("agentia_turn_duration_seconds",
                      "From a turn's acceptance to its last event", buckets=_LATENCY)
GC_PAUSE = Histogram("agentia_gc_pause_seconds",
                     "Garbage collections, by generation: how long each stopped the process",
                     ["generation"],
                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
INBOUND_LAG = Gauge("agentia_inbound_lag",
                    "Turn notifications not yet acked, per agent and shard",
                    ["agent", "shard"], multiprocess_mode="livemax")
ERRORS = Counter("agentia_errors_total", "Error frames sent to clients, by code", ["code"])
REDIS_ERRORS = Counter("agentia_redis_errors_total", "Redis failures seen", ["component"])
MCP_DOWN = Gauge("agentia_mcp_servers_down", "Workers whose MCP server is not connected now",
                 ["server"], multiprocess_mode="livesum")
MCP_FAILURES = Counter("agentia_mcp_failures_total",
                       "MCP connects, probes and tool calls that could not reach the server",
                       ["server", "what"])
WEBHOOKS = Counter("agentia_webhooks_total",
                   "Webhook POST attempts by outcome: delivered; failed (retried later or "
                   "dead-lettered); dead_lettered (given up on)", ["outcome"])
WEBHOOK_REQUEUED = Counter("agentia_webhook_requeued_total",
                           "Events the webhook sweeper re-queued from session logs (their "
                           "appender died, or its outbox write was lost, before queueing them)")
DAPR_REQUEUED = Counter("agentia_dapr_requeued_total",
                        "Events the Dapr publisher's sweeper re-queued from session logs (their "
                        "appender died, or its outbox write was lost, before queueing them)")
DAPR_PUBLISHED = Counter("agentia_dapr_publish_total",
                         "Publish calls to the Dapr sidecar by outcome: published; failed "
                         "(retried once idle AGENTIA_DAPR_RETRY_S)", ["outcome"])
WEBHOOK_LAG = Gauge("agentia_webhook_lag",
                    "Events not yet delivered (queued, in flight or waiting for a retry), "
                    "per outbox shard", ["shard"], multiprocess_mode="livemax")

# edge tally key -> (metric, labels)
_EDGE = {
    "handshakes": (HANDSHAKES, ("ok",)),
    "handshake_unauthorized": (HANDSHAKES, ("unauthorized",)),
    "handshake_forbidden": (HANDSHAKES, ("forbidden",)),
    "refused_capacity": (HANDSHAKES, ("over_capacity",)),
    "refused_user_cap": (HANDSHAKES, ("over_user_limit",)),
    "refused_user_total": (HANDSHAKES, ("over_user_total_limit",)),
    "refused_new_sessions": (HANDSHAKES, ("new_sessions_rate",)),
    "refused_user_sessions": (HANDSHAKES, ("too_many_sessions",)),
    "refused_unknown_agent": (HANDSHAKES, ("unknown_agent",)),
    "refused_agent_mismatch": (HANDSHAKES, ("agent_mismatch",)),
    "refused_over_cap": (HANDSHAKES, ("over_socket_cap",)),
    "refused_bad_request": (HANDSHAKES, ("bad_request",)),
    "refused_origin": (HANDSHAKES, ("origin_not_allowed",)),
    "refused_draining": (HANDSHAKES, ("draining",)),
    "refused_redis_down": (HANDSHAKES, ("redis_unavailable",)),
    "handshake_failed": (HANDSHAKES, ("failed",)),
    "frames_in": (FRAMES, ("in",)),
    "frames_out": (FRAMES, ("out",)),
    "bytes_in": (BYTES, ("in",)),
    "bytes_out": (BYTES, ("out",)),
    "slow_closes": (CLOSES, ("slow",)),
    "flood_closes": (CLOSES, ("flood",)),
    "idle_closes": (CLOSES, ("idle",)),
    "expired_closes": (CLOSES, ("token_expired",)),
    "session_lost_closes": (CLOSES, ("session_lost",)),
    "drain_closes": (CLOSES, ("drain",)),
    "other_closes": (CLOSES, ("other",)),
    "fell_behind": (FELL_BEHIND, ()),
    "dropped_chunk": (DROPPED, ("chunk",)),
    "dropped_partial": (DROPPED, ("partial",)),
    "dropped_transcript": (DROPPED, ("transcript",)),
    "turns_accepted": (TURNS, ("accepted",)),
    "redis_errors": (REDIS_ERRORS, ("edge",)),
}


def _precreate() -> None:
    """Every known label value exists from the start at 0, so that rate() sees the first
    events (a series born with its first count would hide them)."""
    for metric, labels in _EDGE.values():
        if labels:  # a counter without labels exists from its creation
            metric.labels(*labels)
    for outcome in ("accepted", "completed", "attempt_failed", "dead_lettered", "cancelled"):
        TURNS.labels(outcome)
    for code in ErrorCode:
        ERRORS.labels(str(code))
    for component in ("edge", "worker", "api"):
        REDIS_ERRORS.labels(component)
    for generation in ("0", "1", "2"):
        GC_PAUSE.labels(generation)


def sync(tally: Tally[str], synced: Tally[str]) -> None:
    """Add what ``tally`` counted since the last call to the Prometheus counters
    (``error:<code>`` keys count error frames by code)."""
    for key, value in list(tally.items()):
        delta = value - synced[key]
        if delta <= 0:
            continue
        synced[key] = value
        if key.startswith("error:"):
            ERRORS.labels(key[6:]).inc(delta)
        elif key in _EDGE:
            metric, labels = _EDGE[key]
            (metric.labels(*labels) if labels else metric).inc(delta)


_precreate()


def exposition() -> tuple[bytes, str]:
    """The text to serve on /metrics: all processes' samples in multi-process mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def process_exited(pid: int, path: str | None) -> None:
    """Mark a dead child's live gauges as gone (multi-process mode, files under ``path``)."""
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
