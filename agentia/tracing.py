"""OpenTelemetry traces of turns (docs/operations.md#tracing): one trace per turn, from the
edge that receives it through Redis to the worker that runs it and back to the edge.

Off unless the standard ``OTEL_*`` variables ask for an OTLP exporter (:func:`wanted`).
:func:`setup` decides once, at process start; callers check :data:`ON` before calling anything
else here, so a process without tracing makes no tracer call and writes no extra stream field
(measured: docs/benchmarks.md#tracing). The W3C trace context crosses Redis as a
``traceparent`` string in the turn's entry (``tp``): :func:`traceparent` and :func:`parent`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

from opentelemetry.context import Context, get_current
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, get_current_span, use_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agentia.settings import SettingsError

ON = False
"""True once :func:`setup` installed an exporter; read before every other call."""
_tracer: Any = None
_provider: Any = None
_PROTOCOLS = ("http/protobuf", "grpc")
_W3C = TraceContextTextMapPropagator()
Attrs = Mapping[str, str | bool | int | float]
"""A span's attributes (``agentia.*`` names: docs/operations.md#tracing)."""


def wanted(env: Mapping[str, str] = os.environ) -> bool:
    """Tracing is on when an OTLP endpoint is set or ``OTEL_TRACES_EXPORTER`` names
    ``otlp``; ``OTEL_SDK_DISABLED=true`` and ``OTEL_TRACES_EXPORTER=none`` turn it off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",")}
    if "none" in exporters:
        return False
    return bool("otlp" in exporters or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup(service: str) -> bool:
    """Install the OTLP exporter if :func:`wanted` (once per process); returns :data:`ON`.
    ``service`` names the process kind when ``OTEL_SERVICE_NAME`` is unset. The sampler
    (``OTEL_TRACES_SAMPLER``), batching (``OTEL_BSP_*``) and the exporter's endpoint,
    headers and timeout come from the SDK, which reads them from the environment."""
    global ON, _tracer, _provider
    env = os.environ
    if ON or not wanted(env):
        return ON
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = _exporter(env)  # a bad protocol is a SettingsError before anything is made
    named = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": service}
    # not the global provider: livekit-agents (voice) would then export its own spans too
    _provider = TracerProvider(resource=Resource.create(named))
    _provider.add_span_processor(BatchSpanProcessor(exporter))
    _tracer = _provider.get_tracer("agentia")
    ON = True
    return ON


def _exporter(env: Mapping[str, str]) -> Any:
    proto = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
             or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
    if proto not in _PROTOCOLS:
        raise SettingsError(f"OTEL_EXPORTER_OTLP_PROTOCOL={proto!r}: use one of "
                            f"{', '.join(_PROTOCOLS)}")
    if proto == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise SettingsError("OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the "
                                "opentelemetry-exporter-otlp-proto-grpc package") from None
        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )
    return HttpExporter()


def reset() -> None:
    """Back to off, flushing what was recorded (tests; a process sets up once)."""
    global ON, _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    ON, _tracer, _provider = False, None, None


def flush(timeout_s: float = 5.0) -> None:
    """Export what is buffered now (a process about to be killed, e.g. a voice job)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


def now() -> int:
    """A span start time (ns) taken before work whose span is made after it (:func:`record`)."""
    return time.time_ns()


def span(name: str, attrs: Attrs, parent: Context | None = None, kind: str = "internal"
         ) -> Any:
    """A context manager: ``name``'s span, current while inside (a child of ``parent``, or of
    the current span)."""
    return _tracer.start_as_current_span(name, context=parent, kind=_kind(kind),
                                         attributes=attrs)


def start(name: str, attrs: Attrs, parent: Context | None = None, kind: str = "internal"
          ) -> Span:
    """A span that is not made current; the caller ends it."""
    s: Span = _tracer.start_span(name, context=parent, kind=_kind(kind), attributes=attrs)
    return s


def record(name: str, began_ns: int, attrs: Attrs, parent: Context | None = None,
           error: str = "") -> None:
    """A span from ``began_ns`` (:func:`now`) to now, for work already done."""
    s = _tracer.start_span(name, context=parent, start_time=began_ns, attributes=attrs)
    if error:
        fail(s, error)
    s.end()


def fail(s: Span, why: str) -> None:
    s.set_status(Status(StatusCode.ERROR, why))


def use(s: Span | None) -> Any:
    """A context manager making ``s`` current without ending it (nothing if None)."""
    return nullcontext() if s is None else use_span(s, end_on_exit=False)


def current() -> Context:
    """The current context (to parent later spans on, e.g. the deliveries of a turn)."""
    return get_current()


def traceparent() -> str:
    """The current span's W3C ``traceparent`` ("" without one): what a turn entry carries."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent", "")


def parent(tp: str) -> Context | None:
    """The remote parent a ``traceparent`` names (None for "" or a malformed one: the span
    starts a trace of its own)."""
    if not tp:
        return None
    ctx = _W3C.extract({"traceparent": tp})
    return ctx if get_current_span(ctx).get_span_context().is_valid else None


def _kind(kind: str) -> SpanKind:
    return SpanKind[kind.upper()]
