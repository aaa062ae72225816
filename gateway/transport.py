"""The seam between the edge's logic and a WebSocket library, and the table of libraries.

A transport is chosen by name (``AGENTIA_TRANSPORT``) from :data:`TRANSPORTS` and imported
only then, as uvicorn's ``WS_PROTOCOLS``: an edge never loads the library it does not use.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from gateway.node import EdgeNode

TRANSPORTS = {"picows": "gateway.ws_picows", "websockets": "gateway.ws_websockets"}
"""Transport name -> module with ``async def start(node, sock=None) -> Served``."""

_LINGER_0 = struct.pack("ii", 1, 0)


class Transport(Protocol):
    """One accepted WebSocket connection, write side only: the library feeds reads to us."""

    async def send(self, frame: bytes) -> None:
        """Write one text frame (UTF-8 bytes); may wait for the socket to drain."""

    def send_now(self, frame: bytes) -> bool:
        """Write one text frame at once if that needs no waiting (the socket's buffer is not
        full); False when the caller must use :meth:`send`. Saves a task per frame."""

    def buffered(self) -> int:
        """Bytes the library holds for the socket (written, not yet taken by the kernel): part
        of the connection's send budget."""

    async def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; must not wait longer than the library's close timeout."""

    def abort(self) -> None:
        """Drop the TCP connection at once, with a reset (``SO_LINGER`` 0): what is still in
        the kernel's send buffer is freed instead of lingering for minutes."""


def reset_on_close(transport: Any) -> None:
    """Make the next close of an asyncio transport's socket a reset (``SO_LINGER`` 0)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)


def cap_send_buffer(transport: Any, size: int) -> None:
    """Bound the kernel's send buffer of an accepted socket (``size`` 0: kernel autotuning,
    which lets one stalled reader pin up to ``net.ipv4.tcp_wmem``'s maximum, 4 MiB)."""
    sock = transport.get_extra_info("socket") if size > 0 else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


@dataclass(frozen=True, slots=True)
class Served:
    """A listening server of one transport: its port, and how to stop it (``close(deadline)``
    stops listening and waits up to ``deadline`` seconds for it to end)."""

    port: int
    close: Callable[[float], Awaitable[None]]


def port_of(sockets: Iterable[socket.socket], default: int) -> int:
    """The port a server listens on (``default`` if it has no socket)."""
    for sock in sockets:
        return int(sock.getsockname()[1])
    return default


class Start(Protocol):
    def __call__(self, node: EdgeNode, sock: socket.socket | None = None) -> Awaitable[Served]:
        """Bind and start serving ``node``'s public port (raises OSError if it cannot)."""


def transport_for(name: str) -> Start:
    """The ``start`` of the transport called ``name``, imported now (KeyError if unknown)."""
    return cast(Start, importlib.import_module(TRANSPORTS[name]).start)
