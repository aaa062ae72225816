"""Per-user limits: codes, client tables, settings, key tags, metric labels (no I/O)."""

from __future__ import annotations

import pytest

from agentia import metrics as M
from agentia.codes import CloseCode
from agentia.settings import SettingsError, from_env
from agentia.settings_edge import EdgeSettings
from agentia_client import close_action
from agentia_client.policy import CLOSE_CODES
from sessions.keys import Keys, UserKeys
from sessions.opening import _SESSION_REFUSALS, TOO_MANY_CONNECTIONS
from tests.unit.test_keys import hash_tag


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTIA_JWT_SECRET", "x" * 32)  # the edge refuses the public default


def test_new_close_codes_say_whether_to_reconnect() -> None:
    assert CloseCode.TOO_MANY_CONNECTIONS == 4005 and CloseCode.TOO_MANY_CONNECTIONS.reconnect
    assert CloseCode.NEW_SESSIONS_RATE == 4502 and not CloseCode.NEW_SESSIONS_RATE.reconnect
    assert CloseCode.TOO_MANY_SESSIONS == 4503 and not CloseCode.TOO_MANY_SESSIONS.reconnect


def test_the_python_client_table_matches_the_edge() -> None:
    for code in CloseCode:
        assert code.value in CLOSE_CODES, code
        name, action = CLOSE_CODES[code.value]
        assert name == code.name
        if code >= 4000:  # the edge's own codes (the standard ones: RFC 6455 and section 8)
            assert action == ("reconnect" if code.reconnect else "stop"), code
        assert close_action(code.value) == action
    assert close_action(4005) == "reconnect"
    assert close_action(4502) == close_action(4503) == "stop"


@pytest.mark.parametrize("var", ["MAX_CONNECTIONS_PER_USER_TOTAL", "MAX_SESSIONS_PER_HOUR",
                                 "MAX_SESSIONS_PER_USER"])
def test_limit_settings(var: str, monkeypatch: pytest.MonkeyPatch) -> None:
    s = from_env(EdgeSettings)
    assert (s.max_connections_per_user_total, s.max_sessions_per_hour,
            s.max_sessions_per_user, s.new_session_ttl_s) == (100, 200, 1000, 3600)
    monkeypatch.setenv(f"AGENTIA_{var}", "0")  # off
    assert getattr(from_env(EdgeSettings), var.lower()) == 0
    monkeypatch.setenv(f"AGENTIA_{var}", "-1")
    with pytest.raises(SettingsError, match=var):
        from_env(EdgeSettings)


def test_new_session_ttl_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTIA_NEW_SESSION_TTL_S", "5")
    with pytest.raises(SettingsError, match="AGENTIA_NEW_SESSION_TTL_S"):
        from_env(EdgeSettings)


def test_user_keys_share_the_users_tag_and_differ() -> None:
    u = UserKeys("p")
    keys = [u.conns("ann"), u.new("ann"), u.live("ann"), Keys("p").user_sessions("ann")]
    assert {hash_tag(k) for k in keys} == {"u.ann"} and len(set(keys)) == 4
    assert hash_tag(u.conns("ben")) == "u.ben"
    assert all(k.startswith("p:") for k in keys)


def test_every_refusal_has_a_handshake_label() -> None:
    for code, _, tally in (TOO_MANY_CONNECTIONS, *_SESSION_REFUSALS.values()):
        assert isinstance(code, CloseCode)
        assert M._EDGE[tally][0] is M.HANDSHAKES
    labels = {M._EDGE[t][1][0] for _, _, t in (TOO_MANY_CONNECTIONS,
                                                *_SESSION_REFUSALS.values())}
    assert labels == {"over_user_total_limit", "new_sessions_rate", "too_many_sessions"}
