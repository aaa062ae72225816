"""``agentia gateway --processes N``: N edge processes sharing one port (SO_REUSEPORT).

One process holds at most ~19,000 connections (the fd limit), so a box serves more by running
more processes on the same port; the kernel spreads new connections over them. The supervisor
holds the port (a bound, non-listening SO_REUSEPORT socket, so ``--port 0`` can pick one),
restarts a process that dies, and on SIGTERM/SIGINT lets every process drain (close 1012).
The internal port (``/healthz``, ``/readyz``, ``/metrics``) is held and shared the same way.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from typing import NoReturn

from agentia.ports import busy_line, reason
from agentia.settings_edge import EdgeSettings
from agentia.supervise import (
    Child,
    StartError,
    Stopped,
    say,
    stop_all,
    stop_signals,
    supervise,
)


def reserve_port(host: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _busy(what: str, host: str, port: int, exc: OSError, option: str) -> NoReturn:
    say(busy_line("agentia gateway", what, host, port, reason(exc), option), sys.stderr)
    raise SystemExit(1) from None


def run(s: EdgeSettings, processes: int) -> None:
    stopping = stop_signals()
    try:
        holder = reserve_port(s.host, s.port)
    except OSError as exc:
        _busy("edge WebSocket", s.host, s.port, exc, "--port")
    port = holder.getsockname()[1]
    try:
        internal_holder = reserve_port(s.internal_host, s.internal_port)
    except OSError as exc:
        holder.close()
        _busy("edge /readyz and /metrics", s.internal_host, s.internal_port, exc,
              "AGENTIA_INTERNAL_PORT")
    internal = internal_holder.getsockname()[1]
    env = {**os.environ, "AGENTIA_REUSE_PORT": "true", "AGENTIA_INTERNAL_PORT": str(internal)}
    metrics_dir = None
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):  # so /metrics on any process sums them all
        metrics_dir = tempfile.mkdtemp(prefix="agentia-metrics-")
        env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    children: list[Child] = []
    try:
        for _ in range(processes):
            children.append(Child("edge", ["gateway", "--host", s.host, "--port", str(port)],
                                  env, "AGENTIA_EDGE_READY", stopping=stopping))
        pids = ",".join(str(c.proc.pid) for c in children)
        say(f"AGENTIA_GATEWAY_READY port={port} internal_port={internal} pids={pids}")
        supervise(children, stopping)
    except Stopped:
        pass
    except StartError as exc:
        say(f"agentia gateway: {exc}", sys.stderr)
        raise SystemExit(1) from None
    finally:
        stop_all([c.proc for c in children], s.drain_s + 5)
        holder.close()
        internal_holder.close()
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
