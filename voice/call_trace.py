"""A call's span (docs/operations.md#tracing), the one tracing hook of voice/: ``voice.call``
from the job's start to its cleanup; every turn the call submits carries its context (the
bridge submits inside it), so the worker's ``worker.turn`` spans of the call are its children.
Nothing is made when tracing is off (:data:`agentia.tracing.ON`)."""

from __future__ import annotations

from opentelemetry.trace import Span

from agentia import tracing


def setup() -> None:
    """Once per job process (prewarm): the exporter, if OTEL_* asks for one."""
    tracing.setup("agentia-voice")


def call_span(session: str, user: str, room: str) -> Span | None:
    if not tracing.ON:
        return None
    return tracing.start("voice.call", {"agentia.session": session, "agentia.user": user,
                                        "agentia.room": room}, kind="server")


def end_call(span: Span | None) -> None:
    """End the call's span and export it now: the job process may be gone soon after."""
    if span is not None:
        span.end()
        tracing.flush()
