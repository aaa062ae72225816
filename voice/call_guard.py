"""A call's guards (voice/job.py's entrypoint): the caller hanging up, the caller never
joining (the call ends, the room is deleted), and the job's voice worker dying mid-call (the
call is ended in the session log at once)."""

from __future__ import annotations

import asyncio
import logging
import time

from livekit import rtc
from livekit.agents import JobContext

from voice.bridge import VoiceBridge
from voice.call import CallReporter
from voice.settings import VoiceSettings
from voice.slots import HeldSlot
from voice.tokens import delete_room

log = logging.getLogger("agentia.voice")

LOST_WORKER_S = 2.0
"""Bound on each last step of a call whose voice worker died (log it, leave the room)."""


def hang_up(bridge: VoiceBridge, p: rtc.RemoteParticipant) -> None:
    if p.identity == bridge.user:  # before the session tears its reply stream down
        bridge.hanging_up = True


async def guard(ctx: JobContext, reporter: CallReporter, slot: HeldSlot) -> None:
    """Until the call ends. Cancelled before it ended, the job process is being torn down
    without a shutdown: its voice worker died. Then, within a few seconds, the session log
    records the end (``worker_lost``), the caller sees the agent leave now rather than
    after LiveKit's reconnect window (about 20 s), and the user's call slot is given back."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        reporter.bridge.hanging_up = True
        if not reporter.ended:
            log.error("voice worker lost: ending the call of %s", reporter.bridge.session)
            for last_step in (reporter.end(reason="worker_lost"), ctx.room.disconnect(),
                              slot.release()):
                try:
                    await asyncio.wait_for(last_step, LOST_WORKER_S)
                except Exception as exc:  # the process is going: note it, do the next step
                    log.warning("while ending a lost call: %r", exc)
        raise


class JoinWatch:
    """Whether the call's caller joined the room (watching starts before the room connects:
    participants already there when it does are listed, not announced)."""

    def __init__(self, room: rtc.Room, user: str) -> None:
        self.room, self.user = room, user
        self.joined = asyncio.Event()
        room.on("participant_connected", self._on_join)

    def _on_join(self, p: rtc.RemoteParticipant) -> None:
        if p.identity == self.user:
            self.joined.set()

    async def wait(self, deadline: float) -> bool:
        """True once the caller is (or was) in the room; False at ``deadline`` (monotonic)."""
        if any(p.identity == self.user for p in self.room.remote_participants.values()):
            self.joined.set()
        try:
            await asyncio.wait_for(self.joined.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return False
        finally:
            self.room.off("participant_connected", self._on_join)
        return True


async def end_if_caller_never_joins(ctx: JobContext, reporter: CallReporter, watch: JoinWatch,
                                     deadline: float) -> None:
    """A caller who never joins would hold this job (a thread, or a ~500 MB process) and count
    as a call for ever: past ``voice_join_timeout_s`` from the job's start the call ends
    (``caller_never_joined``), the room is deleted (its token is useless then) and the job
    exits (its process too, with the process executor)."""
    if await watch.wait(deadline):
        return
    s: VoiceSettings = ctx.proc.userdata["settings"]
    log.info("the caller of %s did not join room %s within %s s: ending the call",
             reporter.bridge.session, ctx.room.name, s.voice_join_timeout_s)
    reporter.bridge.hanging_up = True
    await reporter.end(reason="caller_never_joined")
    try:
        await delete_room(s, ctx.room.name)
    except Exception as exc:  # LiveKit failing: the empty room expires on its own
        log.warning("could not delete room %s: %r", ctx.room.name, exc)
    ctx.shutdown("caller_never_joined")
