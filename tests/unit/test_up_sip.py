"""``agentia up``'s SIP settings (launch/up_sip.py): off by default, one clear line when wrong."""

from __future__ import annotations

import pytest

from agentia.settings import SettingsError
from launch.up_sip import DEFAULT_SIP_PORT, SipSetting, sip_setting


def test_off_by_default_on_port_5060() -> None:
    assert sip_setting({}) == SipSetting(False, DEFAULT_SIP_PORT) == SipSetting(False, 5060)


@pytest.mark.parametrize(("env", "want"), [
    ({"AGENTIA_SIP": "1"}, SipSetting(True, 5060)),
    ({"AGENTIA_SIP": "true", "AGENTIA_SIP_PORT": "0"}, SipSetting(True, 0)),
    ({"AGENTIA_SIP": " ON ", "AGENTIA_SIP_PORT": "5070"}, SipSetting(True, 5070)),
    ({"AGENTIA_SIP": "no", "AGENTIA_SIP_PORT": "5070"}, SipSetting(False, 5070)),
])
def test_values(env: dict[str, str], want: SipSetting) -> None:
    assert sip_setting(env) == want


@pytest.mark.parametrize(("env", "named"), [
    ({"AGENTIA_SIP": "maybe"}, "AGENTIA_SIP must be"),
    ({"AGENTIA_SIP": "1", "AGENTIA_SIP_PORT": "65536"}, "AGENTIA_SIP_PORT must be"),
    ({"AGENTIA_SIP": "1", "AGENTIA_SIP_PORT": "-1"}, "AGENTIA_SIP_PORT must be"),
    ({"AGENTIA_SIP": "1", "AGENTIA_SIP_PORT": "sip"}, "AGENTIA_SIP_PORT must be"),
])
def test_bad_values_are_one_line(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named) as err:
        sip_setting(env)
    assert "\n" not in str(err.value)
