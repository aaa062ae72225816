"""``agentia up``'s telephony: LiveKit's SIP service beside its private LiveKit server, when
``AGENTIA_SIP`` is on (off by default; docs/voice.md, "Telephony").

LiveKit and its SIP service talk over a Redis (psrpc), so with SIP on ``up`` gives its LiveKit
server a private Redis of its own (servers sharing a Redis form one cluster: never Agentia's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agentia.settings import SettingsError
from launch.redis_server import RedisServer

_ON, _OFF = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
DEFAULT_SIP_PORT = 5060
"""SIP's usual port (UDP and TCP, on ``AGENTIA_HOST``'s loopback or all addresses)."""


@dataclass(frozen=True, slots=True)
class SipSetting:
    on: bool
    port: int
    """Where SIP is answered (UDP and TCP); 0: a free port, printed at start."""


NO_SIP = SipSetting(False, 0)


def sip_setting(env: Mapping[str, str]) -> SipSetting:
    """``AGENTIA_SIP`` (``1``/``true``/``yes``/``on``; default off) and ``AGENTIA_SIP_PORT``
    (default 5060, 0: a free one); :class:`SettingsError` with one clear line otherwise."""
    raw = (env.get("AGENTIA_SIP") or "false").strip().lower()
    if raw not in _ON | _OFF:
        raise SettingsError(f"AGENTIA_SIP must be true or false, not {raw!r}")
    port_raw = (env.get("AGENTIA_SIP_PORT") or str(DEFAULT_SIP_PORT)).strip()
    if not port_raw.isdigit() or not 0 <= int(port_raw) <= 65535:
        raise SettingsError(f"AGENTIA_SIP_PORT must be a port (0-65535), not {port_raw!r}")
    return SipSetting(raw in _ON, int(port_raw))


def livekit_redis(state_dir: Path) -> RedisServer:
    """The private Redis of ``up``'s LiveKit server (no persistence: rooms are live state)."""
    return RedisServer(state_dir / "livekit-redis", appendonly=False, tied=True).start()
