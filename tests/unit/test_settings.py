"""Unit tests for agentia/settings.py: AGENTIA_* environment variables, overrides, validation."""

from __future__ import annotations

import os
import resource

import pytest

from agentia.settings import (
    DEV_SECRET,
    FD_RESERVE,
    ApiSettings,
    Common,
    SettingsError,
    WorkerSettings,
    from_env,
)
from agentia.settings_edge import EdgeSettings
from agentia.settings_outbox import WebhookSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AGENTIA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AGENTIA_DEV", "true")  # the secret checks below unset it


@pytest.fixture
def fd_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """Pretend the process may open 5,000 file descriptors."""
    soft = 5_000
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (soft, 10_000))
    return soft


def test_defaults_without_env() -> None:
    s = from_env(Common)
    assert s == Common()
    w = from_env(WorkerSettings)
    assert w.concurrency == 1_000 and w.agent == "" and w.agents == ""


def test_reads_env(monkeypatch: pytest.MonkeyPatch, fd_limit: int) -> None:
    monkeypatch.setenv("AGENTIA_REDIS_URL", "redis://example:6380/2")
    monkeypatch.setenv("AGENTIA_SHARDS", "16")
    monkeypatch.setenv("AGENTIA_PORT", "9001")
    monkeypatch.setenv("AGENTIA_RATE_PER_S", "2.5")
    monkeypatch.setenv("AGENTIA_JWT_ALGORITHMS", "RS256,ES256")
    s = from_env(EdgeSettings)
    assert s.redis_url == "redis://example:6380/2"
    assert s.shards == 16
    assert s.port == 9001 and isinstance(s.port, int)
    assert s.rate_per_s == 2.5 and isinstance(s.rate_per_s, float)
    assert s.jwt_algorithms == "RS256,ES256"
    assert s.jwt_secret == DEV_SECRET  # untouched fields keep their defaults


def test_worker_reads_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTIA_CONCURRENCY", "4")
    monkeypatch.setenv("AGENTIA_MODEL", "my-model")
    monkeypatch.setenv("AGENTIA_DEMO_WORD_DELAY", "0")
    w = from_env(WorkerSettings)
    assert w.concurrency == 4
    assert w.model == "my-model"
    assert w.demo_word_delay == 0.0


def test_empty_env_var_means_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTIA_SHARDS", "")
    assert from_env(Common).shards == 8


def test_overrides_win_over_env(monkeypatch: pytest.MonkeyPatch, fd_limit: int) -> None:
    monkeypatch.setenv("AGENTIA_PORT", "9001")
    monkeypatch.setenv("AGENTIA_HOST", "0.0.0.0")
    s = from_env(EdgeSettings, port=7000)
    assert s.port == 7000
    assert s.host == "0.0.0.0"


def test_none_override_falls_back_to_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTIA_SHARDS", "3")
    assert from_env(Common, shards=None).shards == 3


@pytest.mark.parametrize(("var", "value"), [("AGENTIA_PORT", "http"), ("AGENTIA_SHARDS", "1.5"),
                                            ("AGENTIA_SEND_QUEUE", "256.0")])
def test_bad_int_names_the_variable(monkeypatch: pytest.MonkeyPatch, fd_limit: int,
                                    var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=var):
        from_env(EdgeSettings)


def test_bad_int_error_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTIA_SHARDS", "eight")
    with pytest.raises(SettingsError) as info:
        from_env(Common)
    assert "AGENTIA_SHARDS" in str(info.value)
    assert "'eight'" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_float_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTIA_TURN_TIMEOUT_S", "soon")
    with pytest.raises(SettingsError, match="AGENTIA_TURN_TIMEOUT_S"):
        from_env(WorkerSettings)


def test_validation_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTIA_SHARDS", "0")
    with pytest.raises(SettingsError, match="AGENTIA_SHARDS"):
        from_env(Common)
    with pytest.raises(SettingsError):
        from_env(WorkerSettings, shards=2, concurrency=0)
    with pytest.raises(SettingsError, match="at most 10,000"):
        from_env(WorkerSettings, shards=2, concurrency=10_001)
    with pytest.raises(SettingsError, match="AGENTIA_MODEL_READ_MS"):
        from_env(WorkerSettings, shards=2, model_read_ms=-1)
    assert from_env(WorkerSettings, shards=2, model_read_ms=0).model_read_ms == 0


def test_worker_concurrency_needs_open_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker raises its soft fd limit for its turns' sockets, or refuses to start."""
    import resource

    limits = {"soft": 256, "hard": 4_096}
    monkeypatch.setattr(resource, "getrlimit", lambda _: (limits["soft"], limits["hard"]))

    def setrlimit(_: int, new: tuple[int, int]) -> None:
        if new[0] > limits["hard"]:
            raise ValueError("above the hard limit")
        limits["soft"] = new[0]

    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert from_env(WorkerSettings, concurrency=1_000).concurrency == 1_000
    assert limits["soft"] == 1_000 + 250 + 100  # raised to what 1,000 turns need
    with pytest.raises(SettingsError, match="ulimit -n"):
        from_env(WorkerSettings, concurrency=5_000)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (4_096, 4_096)  # as far as allowed


def test_max_connections_defaults_to_fd_limit_minus_reserve(fd_limit: int) -> None:
    assert from_env(EdgeSettings).max_connections == fd_limit - FD_RESERVE


def test_max_connections_default_uses_real_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft - FD_RESERVE < 10:
        pytest.skip(f"fd soft limit {soft} is too low here")
    assert from_env(EdgeSettings).max_connections == soft - FD_RESERVE


def test_max_connections_at_ceiling_ok(fd_limit: int) -> None:
    ceiling = fd_limit - FD_RESERVE
    assert from_env(EdgeSettings, max_connections=ceiling).max_connections == ceiling
    assert from_env(EdgeSettings, max_connections=10).max_connections == 10


def test_max_connections_above_ceiling_rejected(
        monkeypatch: pytest.MonkeyPatch, fd_limit: int) -> None:
    with pytest.raises(SettingsError, match="AGENTIA_MAX_CONNECTIONS"):
        from_env(EdgeSettings, max_connections=fd_limit - FD_RESERVE + 1)
    monkeypatch.setenv("AGENTIA_MAX_CONNECTIONS", str(fd_limit))
    with pytest.raises(SettingsError, match="AGENTIA_MAX_CONNECTIONS"):
        from_env(EdgeSettings)


def test_fd_limit_too_low(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (FD_RESERVE + 5, FD_RESERVE + 5))
    with pytest.raises(SettingsError, match="fd limit"):
        from_env(EdgeSettings)


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "True", "yes", "on", "On"])
def test_bool_true(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("AGENTIA_LOG_JSON", raw)
    assert from_env(Common).log_json is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "off"])
def test_bool_false(monkeypatch: pytest.MonkeyPatch, fd_limit: int, raw: str) -> None:
    monkeypatch.setenv("AGENTIA_REUSE_PORT", raw)  # defaults to True
    assert from_env(EdgeSettings).reuse_port is False


def test_bool_default_when_unset(fd_limit: int) -> None:
    s = from_env(EdgeSettings)
    assert s.reuse_port is True
    assert s.compression is False


# ---------------------------------------------------------------- safe defaults (issue 10)

LONG = "x" * 32


@pytest.mark.parametrize("cls", [EdgeSettings, ApiSettings])
def test_public_default_secret_refused(monkeypatch: pytest.MonkeyPatch, fd_limit: int,
                                       cls: type) -> None:
    monkeypatch.delenv("AGENTIA_DEV")
    with pytest.raises(SettingsError, match="AGENTIA_JWT_SECRET is the public default; set a "
                       "secret of at least 32 bytes \\(or AGENTIA_DEV=true"):
        from_env(cls)


@pytest.mark.parametrize("cls", [EdgeSettings, ApiSettings])
def test_short_secret_refused_long_accepted(monkeypatch: pytest.MonkeyPatch, fd_limit: int,
                                            cls: type) -> None:
    monkeypatch.delenv("AGENTIA_DEV")
    monkeypatch.setenv("AGENTIA_JWT_SECRET", "é" * 15 + "x")  # 31 bytes, 16 characters
    with pytest.raises(SettingsError, match="only 31 bytes"):
        from_env(cls)
    monkeypatch.setenv("AGENTIA_JWT_SECRET", LONG)
    assert from_env(cls).jwt_secret == LONG


def test_dev_mode_allows_the_default(monkeypatch: pytest.MonkeyPatch, fd_limit: int) -> None:
    monkeypatch.setenv("AGENTIA_DEV", "false")
    with pytest.raises(SettingsError):
        from_env(EdgeSettings)
    monkeypatch.setenv("AGENTIA_DEV", "true")
    s = from_env(EdgeSettings)
    assert s.dev is True and s.jwt_secret == DEV_SECRET


def test_public_key_algorithms_need_no_secret(monkeypatch: pytest.MonkeyPatch,
                                              fd_limit: int) -> None:
    monkeypatch.delenv("AGENTIA_DEV")
    monkeypatch.setenv("AGENTIA_JWT_ALGORITHMS", "RS256")
    assert from_env(EdgeSettings).jwt_algorithms == "RS256"
    monkeypatch.setenv("AGENTIA_JWT_ALGORITHMS", "RS256,HS256")
    with pytest.raises(SettingsError, match="public default"):
        from_env(EdgeSettings)


@pytest.mark.parametrize(("port", "internal"), [(8765, 9765), (0, 0), (9000, 9000 + 1000)])
def test_internal_port_default(fd_limit: int, port: int, internal: int) -> None:
    assert from_env(EdgeSettings, port=port).internal_port == internal


def test_internal_port_explicit_and_invalid(monkeypatch: pytest.MonkeyPatch,
                                            fd_limit: int) -> None:
    monkeypatch.setenv("AGENTIA_INTERNAL_PORT", "9100")
    assert from_env(EdgeSettings).internal_port == 9100
    monkeypatch.setenv("AGENTIA_INTERNAL_PORT", "8765")
    with pytest.raises(SettingsError, match="AGENTIA_INTERNAL_PORT"):
        from_env(EdgeSettings)
    monkeypatch.delenv("AGENTIA_INTERNAL_PORT")
    with pytest.raises(SettingsError, match="AGENTIA_INTERNAL_PORT"):
        from_env(EdgeSettings, port=65000)


def test_allowed_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert from_env(ApiSettings).origins() is None  # default "*": any origin
    monkeypatch.setenv("AGENTIA_ALLOWED_ORIGINS", " https://Chat.example.com/ ,https://b.test")
    assert from_env(ApiSettings).origins() == {"https://chat.example.com", "https://b.test"}
    monkeypatch.setenv("AGENTIA_ALLOWED_ORIGINS", "https://a.test,*")
    assert from_env(ApiSettings).origins() is None


def test_webhook_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert from_env(Common).webhook_types() == frozenset()  # no URL: off, whatever the events
    monkeypatch.setenv("AGENTIA_WEBHOOK_URL", "https://hooks.example.com/agentia")
    assert from_env(Common).webhook_types() == {"user", "reply", "turn_error", "call", "message",
                                                "takeover"}
    monkeypatch.setenv("AGENTIA_WEBHOOK_EVENTS", " user, tool_call ,")
    assert from_env(Common).webhook_types() == {"user", "tool_call"}
    with pytest.raises(SettingsError, match="SECRET"):
        from_env(WebhookSettings)
    monkeypatch.setenv("AGENTIA_WEBHOOK_SECRET", "s" * 16)
    assert from_env(WebhookSettings).webhook_max_attempts == 8
    for name, bad in (("URL", "ftp://x"), ("SHARDS", "0"), ("MAX_ATTEMPTS", "0"),
                      ("RETRY_S", "500"), ("TIMEOUT_S", "0")):
        monkeypatch.setenv(f"AGENTIA_WEBHOOK_{name}", bad)
        with pytest.raises(SettingsError, match="WEBHOOK"):
            from_env(WebhookSettings)
        monkeypatch.delenv(f"AGENTIA_WEBHOOK_{name}")
        monkeypatch.setenv("AGENTIA_WEBHOOK_URL", "https://hooks.example.com/agentia")


@pytest.mark.parametrize("raw", ["2", "3601", "-1", "x"])
def test_node_ttl_out_of_range_or_not_a_number_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                          raw: str) -> None:
    monkeypatch.setenv("AGENTIA_NODE_TTL", raw)
    with pytest.raises(SettingsError, match="AGENTIA_NODE_TTL"):
        from_env(Common)


def test_node_ttl_is_the_keys_modules_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """sessions/keys.py reads the same variable (edges, the API and voice use its value);
    what settings refuse it ignores (the process does not start anyway)."""
    from sessions import keys as K

    assert from_env(Common).node_ttl == K.NODE_TTL == K._node_ttl() == 15
    monkeypatch.setenv("AGENTIA_NODE_TTL", "4")
    assert from_env(Common).node_ttl == K._node_ttl() == 4
    monkeypatch.setenv("AGENTIA_NODE_TTL", "2")
    assert K._node_ttl() == 15
