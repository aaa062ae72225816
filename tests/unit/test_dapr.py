"""The Dapr bridges' pure parts (docs/dapr.md): their settings, the CloudEvent a session event
becomes, and how the control plane reads an inbound CloudEvent. The real daprd: tests/dapr."""

from __future__ import annotations

import os

import orjson
import pytest

from agentia.settings import (
    ApiSettings,
    Common,
    SettingsError,
    WorkerSettings,
    from_env,
)
from agentia.settings_outbox import DaprPublishSettings
from control.dapr import _parse
from sessions import keys as K
from sessions.dapr_publish import cloudevent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("AGENTIA_", "DAPR_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AGENTIA_DEV", "true")


def test_events_are_queued_only_with_a_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    assert from_env(Common).dapr_types() == frozenset()
    monkeypatch.setenv("AGENTIA_DAPR_TOPIC_EVENTS", "agentia.events")
    assert from_env(Common).dapr_types() == {"user", "reply", "turn_error", "call", "message",
                                             "takeover"}
    monkeypatch.setenv("AGENTIA_DAPR_EVENTS", " user ,tool_call,")
    assert from_env(Common).dapr_types() == {"user", "tool_call"}
    monkeypatch.setenv("AGENTIA_DAPR_TOPIC_EVENTS", "a/b")  # it goes into the sidecar's URL
    with pytest.raises(SettingsError, match="AGENTIA_DAPR_TOPIC_EVENTS"):
        from_env(Common)


def test_publisher_settings_and_the_sidecar_port(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="AGENTIA_DAPR_TOPIC_EVENTS is not set"):
        from_env(DaprPublishSettings)
    monkeypatch.setenv("AGENTIA_DAPR_TOPIC_EVENTS", "agentia.events")
    assert from_env(DaprPublishSettings).dapr_http_port == 3500  # Dapr's default
    monkeypatch.setenv("DAPR_HTTP_PORT", "3601")  # what the sidecar injector sets
    assert from_env(DaprPublishSettings).dapr_http_port == 3601
    monkeypatch.setenv("AGENTIA_DAPR_HTTP_PORT", "3700")
    assert from_env(DaprPublishSettings).dapr_http_port == 3700
    monkeypatch.setenv("DAPR_HTTP_PORT", "x")
    monkeypatch.delenv("AGENTIA_DAPR_HTTP_PORT")
    with pytest.raises(SettingsError, match="DAPR_HTTP_PORT"):
        from_env(DaprPublishSettings)
    monkeypatch.delenv("DAPR_HTTP_PORT")
    for name, bad in (("TIMEOUT_S", "0"), ("CONCURRENCY", "0"), ("RETRY_S", "0.1")):
        monkeypatch.setenv(f"AGENTIA_DAPR_{name}", bad)
        with pytest.raises(SettingsError, match=f"AGENTIA_DAPR_{name}"):
            from_env(DaprPublishSettings)
        monkeypatch.delenv(f"AGENTIA_DAPR_{name}")


def test_an_inbound_topic_needs_the_app_token_outside_dev(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTIA_DAPR_TOPIC_IN", "agentia.in")
    assert from_env(ApiSettings).dapr_app_token == ""  # development: allowed
    monkeypatch.delenv("AGENTIA_DEV")
    monkeypatch.setenv("AGENTIA_JWT_SECRET", "j" * 32)
    with pytest.raises(SettingsError, match="AGENTIA_DAPR_APP_TOKEN"):
        from_env(ApiSettings)
    monkeypatch.setenv("AGENTIA_DAPR_APP_TOKEN", "t" * 15)
    with pytest.raises(SettingsError, match="16 bytes"):
        from_env(ApiSettings)
    monkeypatch.setenv("AGENTIA_DAPR_APP_TOKEN", "t" * 16)
    assert from_env(ApiSettings).dapr_topic_in == "agentia.in"


def test_memory_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert from_env(WorkerSettings).memory == "redis"
    monkeypatch.setenv("AGENTIA_MEMORY", "dapr")
    s = from_env(WorkerSettings)
    assert (s.dapr_statestore, s.dapr_grpc_port) == ("agentia-state", 50001)
    monkeypatch.setenv("DAPR_GRPC_PORT", "50002")
    assert from_env(WorkerSettings).dapr_grpc_port == 50002
    monkeypatch.setenv("AGENTIA_MEMORY", "sqlite")
    with pytest.raises(SettingsError, match="AGENTIA_MEMORY must be redis or dapr"):
        from_env(WorkerSettings)


def test_a_session_event_as_a_cloudevent() -> None:
    event = orjson.dumps({"type": "reply", "turn": 3, "text": "hi", "agent": "demo"})
    ce = orjson.loads(cloudevent("agentia/p", "s-1", "alice", 4, event, 1_765_000_000_123))
    assert ce == {"specversion": "1.0", "id": "s-1:4", "source": "agentia/p",
                  "type": "agentia.event.reply", "subject": "s-1",
                  "time": "2025-12-06T05:46:40.123000Z", "datacontenttype": "application/json",
                  "data": {"session": "s-1", "user": "alice", "offset": 4,
                           "event": orjson.loads(event)}}


def test_dapr_outbox_shards_have_their_own_tags() -> None:
    k = K.Keys("p", 8)
    streams = {k.dapr_outbox(i) for i in range(K.DAPR_SHARDS)}
    assert len(streams) == K.DAPR_SHARDS
    assert not streams & {k.outbox(i, K.DAPR_SHARDS) for i in range(K.DAPR_SHARDS)}
    assert all(s.startswith("p:{dapr.") and s.endswith("}:dapr") for s in streams)


MSG = {"session": "s-1", "text": "parcel left", "role": "system", "by": "crm"}


@pytest.mark.parametrize(("body", "why"), [
    (b"{nope", "not JSON"),
    (orjson.dumps([1]), "not a CloudEvent with an id"),
    (orjson.dumps({"id": "", "data": MSG}), "not a CloudEvent with an id"),
    (orjson.dumps({"id": "e", "data": "{nope"}), "data is not JSON"),
    (orjson.dumps({"id": "e", "data": {**MSG, "role": "admin"}}), "bad data"),
    (orjson.dumps({"id": "e", "data": {**MSG, "text": " "}}), "bad data"),
    (orjson.dumps({"id": "e", "data": {**MSG, "session": "a b"}}), "bad data"),
    (orjson.dumps({"id": "e", "data": {**MSG, "text": "x" * 70_000}}), "larger than 64 KiB"),
    (b'{"id": "e", "data": {"session": "s", "text": "hi", "by": "\\ud800"}}', "not JSON"),
])
def test_an_inbound_cloudevent_that_can_never_succeed_is_dropped(body: bytes, why: str) -> None:
    got = _parse(body)
    assert isinstance(got, str) and got.startswith(why)


def test_an_inbound_cloudevent_is_read() -> None:
    event_id, m = _parse(orjson.dumps({"id": "e-1", "data": MSG}))  # type: ignore[misc]
    assert (event_id, m.session, m.text, m.role, m.by) == ("e-1", "s-1", "parcel left",
                                                           "system", "crm")
    # data as a JSON string (a publisher that did not set datacontenttype), defaults
    got = _parse(orjson.dumps({"id": "e-2", "data": orjson.dumps(
        {"session": "s-1", "text": "hi"}).decode()}))
    assert not isinstance(got, str)
    assert (got[1].role, got[1].by) == ("operator", "dapr")
