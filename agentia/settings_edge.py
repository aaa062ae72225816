"""The edge's settings (``agentia gateway``), from ``AGENTIA_*`` environment variables: the
listening socket, the transport, the per-connection and per-user bounds (docs/operations.md)."""

from __future__ import annotations

import resource
from dataclasses import dataclass

from agentia.settings import FD_RESERVE, Auth, SettingsError


@dataclass(slots=True)
class EdgeSettings(Auth):
    host: str = "127.0.0.1"
    port: int = 8765
    internal_host: str = "127.0.0.1"
    """Where ``/healthz``, ``/readyz`` and ``/metrics`` are served (never on the public port)."""
    internal_port: int = -1
    """-1 (default): ``port`` + 1000, or a free port when ``port`` is 0."""
    transport: str = "picows"
    """WebSocket library: ``picows`` (Cython, callback-driven; 11 vs 15 KiB per idle connection
    and ~30% less CPU per handshake here, docs/benchmarks.md) or ``websockets`` (the reference
    implementation; the only one offering permessage-deflate)."""
    max_connections: int = 0
    max_connections_per_user: int = 100
    max_connections_per_user_total: int = 100
    """Connections of one user over all edges (Redis, sessions/opening.py); 0 = no limit."""
    max_frame_bytes: int = 64 * 1024
    max_text_chars: int = 16_000
    rate_per_s: float = 5.0
    burst: float = 20.0
    send_queue: int = 256
    send_budget_bytes: int = 262_144
    """Bytes one connection may have waiting to be sent: the edge's outbox plus the WebSocket
    library's write buffer (data frames, replay, pongs, errors). Above it: close 4000 SLOW.
    docs/protocol.md#send-budget"""
    send_stall_s: float = 10.0
    """A connection whose queued frames (or a replay) make no progress this long: 4000 SLOW."""
    ping_rate_per_s: float = 20.0
    ping_burst: float = 40.0
    """Allowance of ``ping`` frames and WebSocket PINGs together (a token bucket per
    connection): over it a ``ping`` is answered ``rate_limited``, a PING closes 4002 FLOOD."""
    send_buffer_bytes: int = 131_072
    """SO_SNDBUF of each accepted socket (the kernel doubles it). Bounds what one stalled reader
    pins in the kernel before its send queue fills and it is closed SLOW; 0 leaves the kernel's
    autotuning (up to net.ipv4.tcp_wmem's maximum, often 4 MiB). docs/operations.md"""
    heartbeat_s: float = 25.0
    idle_timeout_s: float = 90.0
    delivery_linger_ms: float = 2.0
    """When events reach the edge densely, gather them this long between reads of its
    delivery stream (one Redis round trip per few events, not per event); an event waits at
    most this much more, the first after a quiet stream not at all. 0: read again at once.
    sessions/membership.py, docs/benchmarks-peer.md"""
    delivery_reads_ahead: bool = True
    """Ask Redis for the edge's delivery reads ahead on a kept connection (one wake-up of
    Redis every few ticks instead of one per read, sessions/delivery_reads.py); false: one
    ``XREAD`` at a time, as before issue 13."""
    handshake_timeout_s: float = 10.0
    ws_ping_interval_s: float = 0.0
    compression: bool = False
    drain_s: float = 10.0
    max_inbound_lag: int = 10_000
    reuse_port: bool = True
    gc_gen0_threshold: int = 25_000
    """Net allocations between young collections (CPython default 700); 0 keeps CPython's
    thresholds. A gen-0 collection walks ~this many objects (1-2.5 µs each)."""
    gc_gen1_threshold: int = 0
    """Gen-0 collections before a gen-1 one (CPython default 10): a gen-1 collection walks
    ~(this + 2) x gc_gen0_threshold objects. gateway/gcpause.py"""
    backlog: int = 4096
    """Listen backlog (capped by net.core.somaxconn): a storm of connects must queue, not be
    dropped into SYN retransmits that look like multi-second handshakes."""

    def validate(self) -> None:
        Auth.validate(self)
        if self.internal_port < 0:
            self.internal_port = self.port + 1000 if self.port else 0
        if self.internal_port > 65535 or (self.port and self.internal_port == self.port):
            raise SettingsError("AGENTIA_INTERNAL_PORT must be a free port (0-65535) other than "
                                "AGENTIA_PORT")
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        ceiling = soft - FD_RESERVE
        if ceiling < 10:
            raise SettingsError(f"the fd limit ({soft}) is too low to serve connections")
        if self.max_connections <= 0:
            self.max_connections = ceiling
        elif self.max_connections > ceiling:
            raise SettingsError(
                f"AGENTIA_MAX_CONNECTIONS={self.max_connections} leaves fewer than {FD_RESERVE} "
                f"of this process's {soft} file descriptors spare; use at most {ceiling} "
                "and run more processes")
        if self.transport not in ("websockets", "picows"):
            raise SettingsError("AGENTIA_TRANSPORT must be websockets or picows")
        if self.max_frame_bytes < 1024:
            raise SettingsError("AGENTIA_MAX_FRAME_BYTES must be at least 1024")
        if self.heartbeat_s * 2 > self.idle_timeout_s:
            # clients ping every heartbeat_s; keep at least two pings per idle timeout
            self.heartbeat_s = self.idle_timeout_s / 3
        if self.max_connections_per_user < 1:
            raise SettingsError("AGENTIA_MAX_CONNECTIONS_PER_USER must be at least 1")
        if self.max_connections_per_user_total < 0:
            raise SettingsError("AGENTIA_MAX_CONNECTIONS_PER_USER_TOTAL must be 0 (no limit) "
                                "or more")
        if self.gc_gen0_threshold < 0 or not 0 <= self.gc_gen1_threshold <= 1000:
            raise SettingsError("AGENTIA_GC_GEN0_THRESHOLD must be 0 or more and "
                                "AGENTIA_GC_GEN1_THRESHOLD between 0 and 1000")
        if not 0 <= self.delivery_linger_ms <= 50:
            raise SettingsError("AGENTIA_DELIVERY_LINGER_MS must be between 0 and 50")
        if self.rate_per_s <= 0 or self.burst < 1 or self.send_queue < 8:
            raise SettingsError("rate_per_s > 0, burst >= 1 and send_queue >= 8 are required")
        self._validate_budget()

    def _validate_budget(self) -> None:
        if self.send_budget_bytes < 65_536:
            raise SettingsError("AGENTIA_SEND_BUDGET_BYTES must be at least 65536")
        if not 0.5 <= self.send_stall_s <= 3600:
            raise SettingsError("AGENTIA_SEND_STALL_S must be between 0.5 and 3600")
        if self.ping_rate_per_s <= 0 or self.ping_burst < 1:
            raise SettingsError("AGENTIA_PING_RATE_PER_S must be > 0 and AGENTIA_PING_BURST "
                                ">= 1")

