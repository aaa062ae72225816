"""What a call tells its caller and the session's other clients: its states and its errors.

The call's life is recorded in the session log as ``call`` events (``joined``, ``error`` with a
``code``, ``ended`` with a ``reason``), which every chat client of the session receives like
any event. Errors are also told to the caller, on the room: spoken while speech works (the
recogniser failed: "I did not catch that") and always in the agent participant's
``agentia.call`` attribute (JSON: state, code, message), which the page shows (the synthesiser
failed: nothing can be spoken). An attribute travels on the signalling connection, so it
arrives even before any media or data channel is up (a text stream sent that early was lost).

Replies to turns typed in chat while the call is up are spoken in the call too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

import orjson
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice.events import AgentStateChangedEvent, CloseEvent, ErrorEvent

from sessions.call_slots import CallSlots, SlotsUnavailable
from voice.bridge import VoiceBridge

log = logging.getLogger("agentia.voice")

CALL_ATTRIBUTE = "agentia.call"
"""Attribute of the agent participant: the call's last state or error, JSON."""
NOT_HEARD = "Sorry, I did not catch that. Please say it again."
ERRORS = {
    "stt_error": ("stt_failed", "speech recognition failed"),
    "tts_error": ("tts_failed", "speech synthesis failed"),
    "llm_error": ("agent_unavailable", "the agent could not be reached"),
}
"""livekit-agents error type -> (our code, what the caller is told)."""
ROOM_LEFT_NORMALLY = frozenset({
    rtc.DisconnectReason.CLIENT_INITIATED, rtc.DisconnectReason.ROOM_DELETED,
    rtc.DisconnectReason.ROOM_CLOSED, rtc.DisconnectReason.PARTICIPANT_REMOVED,
    rtc.DisconnectReason.DUPLICATE_IDENTITY})
"""Why the agent's room connection may end with the call going as planned: any other reason
(the signal connection closed, a timeout, the server shutting down or draining) means the
LiveKit server was lost, and the call with it."""
LIVEKIT_LOST = ("livekit_lost", "the LiveKit server was lost: start the call again")


def error_code(error: Any) -> tuple[str, str]:
    """(code, message) for a livekit-agents STT/TTS/LLM error."""
    code, what = ERRORS.get(str(getattr(error, "type", "")), ("voice_failed", "the call failed"))
    detail = str(getattr(error, "error", error))[:200]
    return code, f"{what}: {detail}" if detail else what


class CallReporter:
    """Wires one call's AgentSession events to the session log and the room."""

    def __init__(self, bridge: VoiceBridge, room: rtc.Room,
                 slots: CallSlots | None = None) -> None:
        self.bridge = bridge
        self.room = room
        self.slots = slots
        """Where the call's end is claimed (``sessions.keys.call_end``): a lost worker's calls
        are ended by the control plane (voice/webhooks.py), and never twice."""
        self.session: AgentSession[Any] | None = None
        self.ended = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def attach(self, session: AgentSession[Any]) -> None:
        self.session = session
        session.on("error", self.on_error)
        session.on("close", self.on_close)
        self.room.on("disconnected", self.on_room_disconnected)
        session.on("agent_state_changed", self.on_agent_state)
        self.bridge.on_chat_turn = self.speak_turn

    def on_room_disconnected(self, reason: Any) -> None:
        """The agent's room connection ended for good (after the SDK's own reconnect tries).
        Not by us, nor by the room's end: LiveKit is gone. Recorded first as an ``error``
        then ``ended`` with ``reason: "livekit_lost"`` (else the session's close, which
        follows, would say ``user_initiated``)."""
        if reason in ROOM_LEFT_NORMALLY or self.ended:
            return
        self.ended = True
        code, message = LIVEKIT_LOST
        log.warning("call of %s: LiveKit lost (room disconnected, reason %s)",
                    self.bridge.session, reason)
        self._spawn(self._lost(code, message))

    async def _lost(self, code: str, message: str) -> None:
        await self.bridge.note("error", code=code, message=message)
        if await self.claim_end():
            await self.bridge.note("ended", reason=code)

    async def claim_end(self) -> bool:
        """Whether this job writes the call's ``ended`` (False: it was already written, by
        the control plane after LiveKit saw the agent leave). Redis unreachable: True (the
        write that follows fails and is logged the same way)."""
        if self.slots is None:
            return True
        try:
            claimed = await self.slots.claim_end(self.bridge.session, self.room.name,
                                                 self.bridge.node)
        except SlotsUnavailable:
            return True
        if not claimed:
            log.info("call of %s in room %s: its end is already recorded",
                     self.bridge.session, self.room.name)
        return claimed

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_error(self, ev: ErrorEvent) -> None:
        """An unrecoverable STT/TTS/LLM error (the framework already gave up retrying)."""
        if getattr(ev.error, "recoverable", True):
            return
        code, message = error_code(ev.error)
        log.warning("call error in %s: %s", self.bridge.session, message)
        self._spawn(self.report("error", code=code, message=message))
        if code == "stt_failed":
            self._say(NOT_HEARD)

    def on_agent_state(self, ev: AgentStateChangedEvent) -> None:
        """The call now waits for the caller: a ``state listening`` event for the session's
        clients (the worker writes the turn's other states)."""
        if ev.new_state == "listening" and not self.ended:
            self._spawn(self.bridge.listening())

    def on_close(self, ev: CloseEvent) -> None:
        log.info("call of %s closed: %s", self.bridge.session, ev.reason.value)
        fields: dict[str, Any] = {"reason": ev.reason.value}
        if ev.error is not None:
            fields["code"], fields["message"] = error_code(ev.error)
        self._spawn(self.end(**fields))

    async def report(self, state: str, **fields: Any) -> None:
        """Record ``state`` in the session log and tell the caller, both best effort."""
        await asyncio.gather(self.bridge.note(state, **fields), self.tell(state, **fields))

    async def tell(self, state: str, **fields: Any) -> None:
        body = orjson.dumps({"state": state, "ts": time.time(), **fields}).decode()
        try:
            await self.room.local_participant.set_attributes({CALL_ATTRIBUTE: body})
        except Exception as exc:  # the room may be gone: the log still has it
            log.info("could not tell the caller %s: %s", state, exc)

    async def end(self, **fields: Any) -> None:
        if not self.ended:
            self.ended = True
            if await self.claim_end():
                await self.report("ended", **fields)

    async def aclose(self) -> None:
        """At the end of the job: wait for the reports, then record the end if not yet."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.end(reason="job_shutdown")

    def speak_turn(self, turn: int) -> None:
        """Speak the reply to a turn typed in chat (interruptible; never cancels the turn)."""
        self._say(self.bridge.follow(turn))

    def _say(self, text: Any) -> None:
        if self.session is None:
            return
        if isinstance(text, str):  # a line of ours, no turn's reply: its transcript has none
            self.bridge.speaking_turn = None
        try:
            self.session.say(text, allow_interruptions=True, add_to_chat_ctx=False)
        except RuntimeError as exc:  # the session is closing
            log.info("not spoken: %s", exc)
