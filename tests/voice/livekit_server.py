"""Moved to :mod:`voice.livekit_server` (``agentia up`` uses it too)."""

from voice.livekit_server import LiveKitServer, find_binary, free_port

__all__ = ["LiveKitServer", "find_binary", "free_port"]
