"""A running voice call's slot (sessions/call_slots.py): refreshed while the call runs,
given back when its job ends."""

from __future__ import annotations

import asyncio
import logging

from sessions import keys as K
from sessions.call_slots import CallSlots, SlotsUnavailable

__all__ = ["CallSlots", "HeldSlot", "SlotsUnavailable"]

log = logging.getLogger("agentia.voice")


class HeldSlot:
    """The slot of one running call, refreshed every third of its lease until released."""

    def __init__(self, slots: CallSlots, user: str, room: str,
                 lease_s: float = K.CALL_SLOT_LEASE) -> None:
        self.slots, self.user, self.room, self.lease_s = slots, user, room, lease_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._refresh_forever())

    async def release(self) -> None:
        """Stop refreshing, then give the slot back (best effort: its lease ends anyway)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.slots.release(self.user, self.room)
        except SlotsUnavailable:
            log.warning("could not release the call slot of %s: Redis unavailable; it lapses "
                        "within %d s", self.room, self.lease_s)

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.slots.refresh(self.user, self.room, self.lease_s)
            except SlotsUnavailable:
                log.warning("could not refresh the call slot of %s: Redis unavailable",
                            self.room)
            await asyncio.sleep(self.lease_s / 3)
