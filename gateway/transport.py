"""The seam between the edge's logic and a WebSocket library (``websockets`` today)."""

from __future__ import annotations

from typing import Protocol


class Transport(Protocol):
    """One accepted WebSocket connection, write side only: the library feeds reads to us."""

    async def send(self, frame: bytes) -> None:
        """Write one text frame (UTF-8 bytes); may wait for the socket to drain."""

    def send_now(self, frame: bytes) -> bool:
        """Write one text frame at once if that needs no waiting (the socket's buffer is not
        full); False when the caller must use :meth:`send`. Saves a task per frame."""

    async def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; must not wait longer than the library's close timeout."""

    def abort(self) -> None:
        """Drop the TCP connection at once."""
