"""Phone calls into sessions through LiveKit's SIP service (docs/voice.md, "Telephony").

LiveKit's SIP service (github.com/livekit/sip, built by ``ops/sip/build.sh``) answers a SIP
INVITE, asks the LiveKit server (over their shared Redis) for the inbound trunk and dispatch rule
that match the call, and joins the room the rule names as the participant ``sip_<number>``
(``<number>``: the user part of the caller's ``From``). A rule made here dispatches the voice
agent into that room with the job metadata of a web call's dispatch (voice/tokens.py): the
session, and as its user the caller's participant identity. The voice worker then takes the
phone caller as it takes a browser caller: it opens the session as that user, listens to the
caller's audio and speaks the agent's replies into the call.

A rule names one caller's number and one session: who may call, and into which conversation,
is the operator's decision (a trunk admits the SIP peers, a rule per known number).
"""

from __future__ import annotations

import asyncio

from livekit import api

from sessions import keys as K
from voice.settings import VoiceSettings
from voice.tokens import job_metadata


def caller_identity(number: str) -> str:
    """The room identity LiveKit gives a caller from ``number`` (its phone number shown, as
    :func:`phone_rule` asks: with ``hide_phone_number`` it would be a hash)."""
    return f"sip_{number}"


def phone_trunk(name: str, numbers: list[str], peers: list[str]) -> api.SIPInboundTrunkInfo:
    """An inbound trunk: calls to ``numbers`` (the user part of the INVITE's ``To``) from the
    SIP peers at ``peers`` (addresses or CIDRs) are let in, without digest authentication."""
    return api.SIPInboundTrunkInfo(name=name, numbers=numbers, allowed_addresses=peers)


def phone_rule(s: VoiceSettings, number: str, session: str,
               trunk_ids: list[str]) -> api.CreateSIPDispatchRuleRequest:
    """Calls from ``number`` on ``trunk_ids`` ring in a fresh room each (``voice_room_prefix``,
    the number, a random part), with the voice agent (``voice_agent_name``) dispatched into
    ``session`` as the user :func:`caller_identity` of ``number``."""
    if not K.SESSION_ID_RE.fullmatch(session):
        raise ValueError(f"not a session id: {session!r}")
    if not number or any(c.isspace() or c in "@:;" for c in number):
        raise ValueError(f"not the user part of a SIP URI: {number!r}")
    user = caller_identity(number)
    agent = api.RoomAgentDispatch(agent_name=s.voice_agent_name,
                                  metadata=job_metadata(session, user))
    return api.CreateSIPDispatchRuleRequest(dispatch_rule=api.SIPDispatchRuleInfo(
        name=f"agentia {number} -> {session}", trunk_ids=trunk_ids, inbound_numbers=[number],
        hide_phone_number=False,
        rule=api.SIPDispatchRule(dispatch_rule_individual=api.SIPDispatchRuleIndividual(
            room_prefix=s.voice_room_prefix.rstrip("-_"))),
        room_config=api.RoomConfiguration(agents=[agent])))


async def route_number(s: VoiceSettings, number: str, session: str,
                       trunk_ids: list[str]) -> str:
    """Create :func:`phone_rule`'s dispatch rule on the LiveKit server; its id. Bounded by
    ``voice_livekit_timeout_s``; LiveKit errors (``api.TwirpError``) propagate."""
    async with api.LiveKitAPI(s.http_url, s.livekit_api_key, s.livekit_api_secret,
                              failover=False) as lk:
        rule = await asyncio.wait_for(
            lk.sip.create_dispatch_rule(phone_rule(s, number, session, trunk_ids)),
            s.voice_livekit_timeout_s)
    return str(rule.sip_dispatch_rule_id)


async def add_trunk(s: VoiceSettings, trunk: api.SIPInboundTrunkInfo) -> str:
    """Create an inbound trunk on the LiveKit server; its id (bounded, errors propagate)."""
    async with api.LiveKitAPI(s.http_url, s.livekit_api_key, s.livekit_api_secret,
                              failover=False) as lk:
        made = await asyncio.wait_for(
            lk.sip.create_inbound_trunk(api.CreateSIPInboundTrunkRequest(trunk=trunk)),
            s.voice_livekit_timeout_s)
    return str(made.sip_trunk_id)
