"""Agentia: a real-time gateway that serves AI agents over WebSockets and voice."""

__version__ = "0.1.0"
PROTOCOL = "agentia.v1"
