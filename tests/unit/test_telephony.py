"""voice/telephony.py without a server: the dispatch rule a caller's number gets, and the
values that are refused before LiveKit sees them. The round trip through a real LiveKit, SIP
service and SIP caller is tests/voice/test_sip.py."""

from __future__ import annotations

import orjson
import pytest

from voice.settings import VoiceSettings
from voice.telephony import caller_identity, phone_rule, phone_trunk
from voice.tokens import parse_job_metadata

S = VoiceSettings(redis_url="redis://127.0.0.1:1/0", voice_agent_name="agentia-voice-x")


def test_a_callers_rule_dispatches_the_agent_into_the_session_as_the_caller() -> None:
    req = phone_rule(S, "+15550123", "phone-1", ["ST_a"])
    rule = req.dispatch_rule
    assert list(rule.inbound_numbers) == ["+15550123"] and list(rule.trunk_ids) == ["ST_a"]
    assert rule.hide_phone_number is False  # else LiveKit names the caller by a hash
    assert rule.rule.dispatch_rule_individual.room_prefix == "agentia-call"
    [agent] = rule.room_config.agents
    assert agent.agent_name == "agentia-voice-x"
    # what the voice worker reads (voice/job.py): the session, and the caller as its user
    assert parse_job_metadata(agent.metadata) == ("phone-1", "sip_+15550123")
    assert orjson.loads(agent.metadata)["user"] == caller_identity("+15550123")


@pytest.mark.parametrize("number", ["", "10 00", "1000@host", "sip:1000", "1000;x=y"])
def test_a_number_that_is_not_a_sip_user_part_is_refused(number: str) -> None:
    with pytest.raises(ValueError, match="SIP URI"):
        phone_rule(S, number, "phone-1", ["ST_a"])


@pytest.mark.parametrize("session", ["", "a b", "x" * 65, "s/1"])
def test_a_session_id_the_bus_would_refuse_is_refused(session: str) -> None:
    with pytest.raises(ValueError, match="session id"):
        phone_rule(S, "1000", session, ["ST_a"])


def test_a_trunk_admits_its_numbers_from_its_peers_only() -> None:
    trunk = phone_trunk("t", ["5550100"], ["127.0.0.1/32"])
    assert (list(trunk.numbers), list(trunk.allowed_addresses)) == (["5550100"],
                                                                   ["127.0.0.1/32"])
    assert not trunk.auth_username
