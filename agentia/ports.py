"""Is a TCP port free? One line that says which port and what to pass when it is not.

``agentia up`` checks every port it was told to use before it starts anything, and the edge
and the control plane bind before they start their loops, so a busy port is a one-line error
and a non-zero exit within a second, never a hang.
"""

from __future__ import annotations

import errno
import random
import socket
from pathlib import Path


def problem(host: str, port: int) -> str | None:
    """Why ``port`` cannot be listened on at ``host`` (``None``: it can; port 0 always can).
    No SO_REUSEPORT here: an edge that shares a port on purpose sets it, a leftover edge from
    an earlier run would share it silently."""
    if port == 0:
        return None
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            s.bind((host, port))
        except OSError as exc:
            return reason(exc)
    return None


def reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "is in use"
    if exc.errno == errno.EACCES:
        return "needs privileges"
    return f"cannot be used ({exc.strerror or exc})"


def busy_line(prog: str, what: str, host: str, port: int, why: str, option: str) -> str:
    """The one line to print, e.g. ``agentia up: port 8765 (edge WebSocket) on 127.0.0.1 is in
    use: stop what holds it or pass --port PORT (0 picks a free one)``; ``option`` is a command
    line option (``--port``) or an environment variable (``AGENTIA_INTERNAL_PORT``)."""
    remedy = f"pass {option} PORT" if option.startswith("-") else f"set {option}=PORT"
    return (f"{prog}: port {port} ({what}) on {host} {why}: stop what holds it or {remedy} "
            "(0 picks a free one)")


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now, for a server started a moment later with it (LiveKit, the
    SIP service, a private redis-server: they take their ports as numbers). Chosen at random
    *below* the kernel's ephemeral range: a port the kernel hands out for a bind to port 0 lies
    in that range, where every outgoing connection and every other port-0 bind may take it
    before the server binds it (seen: LiveKit exiting with "address already in use" while
    tests ran beside it). Falls back to port 0's answer if no port below it is free."""
    low = ephemeral_low()
    for _ in range(200):
        port = random.randint(max(1024, low - 12_000), low - 1)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (``ip_local_port_range``; 32768 when it
    cannot be read)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
    return low if low > 2048 else 32768
