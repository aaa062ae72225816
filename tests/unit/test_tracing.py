"""When tracing is on (agentia/tracing.py): the standard OTEL_* variables decide, off by
default; and the traceparent a turn entry carries round-trips."""

from __future__ import annotations

import os

import pytest

from agentia import tracing
from agentia.settings import SettingsError

URL = "http://127.0.0.1:4318"


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": URL}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": URL + "/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "console,otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, False),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": URL}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": URL}, False),
    ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": URL}, True),
])
def test_on_only_when_an_otlp_exporter_is_asked_for(env: dict[str, str], on: bool) -> None:
    assert tracing.wanted(env) is on


def test_setup_off_installs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(k)
    assert tracing.setup("agentia-test") is False
    assert tracing.ON is False and tracing._tracer is None


def test_an_unknown_protocol_is_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", URL)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(SettingsError, match="http/json"):
        tracing.setup("agentia-test")
    assert tracing.ON is False and tracing._provider is None


def test_a_traceparent_round_trips_and_a_bad_one_starts_a_new_trace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    # a provider without an exporter: the helpers, not the export (tests/e2e/test_tracing.py)
    monkeypatch.setattr(tracing, "_tracer", TracerProvider().get_tracer("test"))
    assert tracing.traceparent() == ""  # no span: nothing to carry
    with tracing.span("a", {}) as a:
        tp = tracing.traceparent()
    ctx = a.get_span_context()
    assert tp.startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")  # then its flags
    child = tracing.start("b", {}, tracing.parent(tp))
    assert child.parent is not None and child.parent.span_id == ctx.span_id
    assert child.get_span_context().trace_id == ctx.trace_id
    child.end()
    assert tracing.parent("") is None and tracing.parent("00-zz-1") is None
