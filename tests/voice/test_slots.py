"""Per-user call slots on a real Redis (voice/slots.py) and their settings."""

from __future__ import annotations

import asyncio

import pytest

from agentia.settings import SettingsError
from sessions import keys as K
from sessions.bus import Bus
from voice.settings import VoiceSettings
from voice.slots import HeldSlot


async def test_a_user_holds_at_most_the_limit_and_a_release_frees_one(bus: Bus) -> None:
    slots = bus.call_slots()
    assert await slots.acquire("alice", "room-1", 2)
    assert await slots.acquire("alice", "room-2", 2)
    assert not await slots.acquire("alice", "room-3", 2)
    assert await slots.acquire("alice", "room-2", 2)  # the same call again: a refresh
    assert await slots.acquire("bob", "room-4", 2)  # another user has their own
    assert await slots.count("alice") == 2
    await slots.release("alice", "room-1")
    assert await slots.acquire("alice", "room-3", 2)
    ttl = await bus.redis.pttl(K.user_calls(bus.keys, "alice"))
    assert 0 < ttl <= K.CALL_SLOT_LEASE * 1000


async def test_a_slot_nobody_refreshes_lapses(bus: Bus) -> None:
    slots = bus.call_slots()
    assert await slots.acquire("carol", "room-1", 1, lease_s=0.3)
    assert not await slots.acquire("carol", "room-2", 1)
    await asyncio.sleep(0.5)
    assert await slots.count("carol") == 0
    assert await slots.acquire("carol", "room-2", 1)


async def test_a_held_slot_outlives_its_lease_until_released(bus: Bus) -> None:
    slots = bus.call_slots()
    assert await slots.acquire("dave", "room-1", 1, lease_s=0.6)
    held = HeldSlot(slots, "dave", "room-1", lease_s=0.6)
    held.start()
    try:
        await asyncio.sleep(1.5)  # 2.5 leases
        assert await slots.count("dave") == 1
        assert not await slots.acquire("dave", "room-2", 1)
    finally:
        await held.release()
    assert await slots.count("dave") == 0
    assert await slots.acquire("dave", "room-2", 1)


def test_settings_join_timeout_exceeds_the_dispatch_wait() -> None:
    VoiceSettings().validate()  # the defaults: 30 s > 10 s, 2 calls
    with pytest.raises(SettingsError, match="AGENTIA_VOICE_JOIN_TIMEOUT_S"):
        VoiceSettings(voice_join_timeout_s=10, voice_dispatch_wait_s=10).validate()
    with pytest.raises(SettingsError, match="AGENTIA_VOICE_MAX_CALLS_PER_USER"):
        VoiceSettings(voice_max_calls_per_user=0).validate()
