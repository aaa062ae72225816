"""One call, as a LiveKit job: the job process's prewarm (models loaded once per process) and
the call's entrypoint, which bridges the room's caller to the session named in the job's
metadata and wires the call's VAD, STT, agent (the bus) and TTS into livekit-agents' session.
The worker that registers these with LiveKit is :mod:`voice.worker`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from livekit.agents import (
    Agent,
    AgentSession,
    AutoSubscribe,
    JobContext,
    JobProcess,
    room_io,
    stt,
    tts,
)
from livekit.plugins import silero

from agentia.settings import from_env
from sessions.bus import Bus, connect
from voice import (
    call_guard,
    call_trace,
    ffi_routing,
    interim,
    pacing,
    shared_vad,
    warm,
)
from voice.bridge import VoiceBridge
from voice.bus_llm import BusLLM, log_timings
from voice.call import CallReporter
from voice.chunking import FirstClauseTokenizer
from voice.engines import PooledSTT, once
from voice.plain_text import TTS_TEXT_TRANSFORMS
from voice.providers import load_plugins
from voice.settings import CLOUD_STT, VoiceSettings
from voice.slots import HeldSlot
from voice.speech_setup import recogniser, stt_pool, synthesiser
from voice.telephony import caller_identity
from voice.tokens import parse_job_metadata
from voice.transcripts import CallerSpeech, SpokenText
from voice.turn_end import SentenceEnd, endpointing, turn_detector, turn_vad_silence
from voice.uplink_stats import UplinkWatch

log = logging.getLogger("agentia.voice")

INPUT_RATE = 16_000
"""The caller's audio as the call receives it (livekit-agents' default: 24 kHz): Silero's and
Whisper's own rate, so neither resamples it again (the room's audio stream resamples from the
decoder's 48 kHz in Rust either way)."""
APM_STEP_MS = 10
"""WebRTC's audio processing (the AGC) takes whole 10 ms blocks: another frame length makes
its native code panic, which aborts the process."""
INSTRUCTIONS = "Answer through the Agentia session's agent (the bus), never a local model."


class _RoomGoneQuiet(logging.Filter):
    """livekit-agents logs every session event it cannot send to a room that is gone (LiveKit
    lost) with two chained tracebacks: one warning line each is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "failed to send session event":
            record.exc_info, record.exc_text = None, None
        return True


def quiet_room_gone() -> None:
    logging.getLogger("livekit.agents").addFilter(_RoomGoneQuiet())


def prewarm(proc: JobProcess) -> None:
    """Load the models before any call: once per process. With the thread executor this runs
    for every call, in one process: the engines are shared (:mod:`voice.engines`)."""
    quiet_room_gone()
    ffi_routing.install()  # the process that runs the rooms: voice/ffi_routing.py
    s: VoiceSettings = from_env(VoiceSettings)
    proc.userdata["settings"] = s
    call_trace.setup()
    silence = turn_vad_silence(s)
    vad = once(("vad", silence), lambda: silero.VAD.load(min_silence_duration=silence))
    proc.userdata["vad"] = vad
    load_plugins(s)  # the job process's main thread (a no-op in the worker's own process)
    warm.first_call(native=s.voice_executor == "thread")
    if s.voice_stt not in CLOUD_STT:  # a cloud client is made in each call's event loop
        proc.userdata["stt"] = once(("stt", s.voice_stt), lambda: stt_pool(s))


def _speech(proc: JobProcess, bridge: VoiceBridge | None = None
            ) -> tuple[Any, stt.STT[Any], tts.TTS[Any]]:
    """One call's VAD, streaming STT and TTS: its own objects (the session subscribes to their
    events, on this call's event loop) over the process's shared engines; the caller's interim
    transcripts go to ``bridge`` (voice/interim.py)."""
    s: VoiceSettings = proc.userdata["settings"]
    if "stt" in proc.userdata:
        recog: stt.STT[Any] = PooledSTT(proc.userdata["stt"], timeout_s=s.voice_stt_timeout_s)
    else:
        recog = recogniser(s)
    # one Silero stream per call: the recogniser's VAD decides on the turn VAD's inferences
    tap = shared_vad.Tap()
    if not recog.capabilities.streaming:  # Whisper, pocketsphinx, OpenAI's transcriptions
        cuts = shared_vad.FollowerVAD(tap, proc.userdata["vad"],
                                      min_silence_duration=s.voice_stt_min_silence_s)
        recog = interim.streaming(recog, cuts, s.voice_stt_early_s, s.voice_interim_s,
                                  bridge.interim if bridge else None)
    speak = synthesiser(s)
    if s.voice_first_chunk_words and not speak.capabilities.streaming:  # espeak-ng
        speak = tts.StreamAdapter(tts=speak, sentence_tokenizer=FirstClauseTokenizer(
            min_words=min(2, s.voice_first_chunk_words), max_words=s.voice_first_chunk_words))
    return shared_vad.TurnVAD(proc.userdata["vad"], tap), recog, speak


def _session(proc: JobProcess, bridge: VoiceBridge, ends: Any) -> AgentSession[Any]:
    s: VoiceSettings = proc.userdata["settings"]
    vad, recog, speak = _speech(proc, bridge)
    return AgentSession(
        vad=vad, stt=recog, llm=BusLLM(bridge), tts=speak,
        turn_handling={
            "turn_detection": ends,
            "endpointing": endpointing(s),
            # "adaptive" interruption would call a hosted model: off. Preemptive generation
            # submits the turn at its final transcript and holds its audio until the turn's
            # end is confirmed; a caller who goes on speaking cancels it (docs/voice.md)
            "interruption": {"mode": "vad"},
            "preemptive_generation": {"enabled": s.voice_preemptive, "preemptive_tts": True},
        },
        # plain text to the TTS at once, markdown still filtered (voice/plain_text.py)
        tts_text_transforms=TTS_TEXT_TRANSFORMS,
        aec_warmup_duration=s.voice_aec_warmup_s or None, user_away_timeout=None)


async def entrypoint(ctx: JobContext) -> None:
    """One call: bridge the room's caller to the session named in the job metadata."""
    s: VoiceSettings = ctx.proc.userdata["settings"]
    deadline = time.monotonic() + s.voice_join_timeout_s
    session_id, user = parse_job_metadata(ctx.job.metadata)
    watch = call_guard.JoinWatch(ctx.room, user)
    bus = Bus(connect(s.redis_url, max_connections=8), prefix=s.redis_prefix, shards=s.shards)
    slot = HeldSlot(bus.call_slots(), user, ctx.room.name)
    slot.start()
    bridge = VoiceBridge(bus, session_id, user, tool_notice_s=s.voice_tool_notice_ms / 1000)
    bridge.trace = call_trace.call_span(session_id, user, ctx.room.name)
    ctx.room.on("participant_disconnected", lambda p: call_guard.hang_up(bridge, p))
    # the control plane answers the caller once the agent is in the room (voice/tokens.py):
    # joining while the session opens on the bus saves that round trip from the Talk click
    await asyncio.gather(bridge.start(), ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY))
    log.info("call of session %s in job process %d (room %s, node %s)", session_id,
             os.getpid(), ctx.room.name, bridge.node)
    reporter = CallReporter(bridge, ctx.room, slot.slots)
    uplink = UplinkWatch(ctx.room, user)  # the caller's audio as received (voice/uplink_stats)
    tasks = [asyncio.create_task(call_guard.guard(ctx, reporter, slot)),
             asyncio.create_task(uplink.run())]
    ends = turn_detector(s)

    async def cleanup() -> None:
        bridge.hanging_up = True
        if isinstance(ends, SentenceEnd):
            log.info("turn ends of session %s: %s", session_id, ends.summary())
        if uplink.last:
            log.info("caller audio jitter buffer of session %s: %s", session_id, uplink.last)
        call_trace.end_call(bridge.trace)
        await reporter.aclose()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await slot.release()
        await bridge.close()
        await bus.close()

    ctx.add_shutdown_callback(cleanup)
    tasks.append(asyncio.create_task(
        call_guard.end_if_caller_never_joins(ctx, reporter, watch, deadline)))
    agent_session = _session(ctx.proc, bridge, ends)
    reporter.attach(agent_session)
    agent_session.on("close", lambda _ev: ctx.shutdown("the call ended"))
    heard = CallerSpeech(bridge, s.voice_aec_warmup_s)
    agent_session.on("agent_state_changed", heard.on_agent_state)
    agent_session.on("user_input_transcribed", heard.on_transcribed)
    agent_session.on("conversation_item_added", lambda ev: log_timings(ev.item, session_id))
    await agent_session.start(
        agent=Agent(instructions=INSTRUCTIONS), room=ctx.room, record=False,
        room_options=room_io.RoomOptions(
            participant_identity=user, text_input=False,
            audio_input=audio_input(s, user),
            text_output=room_io.TextOutputOptions(next_in_chain=SpokenText(bridge))))
    pacing.pace_by_average(agent_session)  # before the agent speaks: voice/pacing.py
    await bridge.note("joined", room=ctx.room.name)


def audio_input(s: VoiceSettings, user: str) -> room_io.AudioInputOptions:
    """How the call takes its caller's audio: at 16 kHz in ``voice_input_frame_ms`` frames.
    Automatic gain control (WebRTC's, on every frame) only for a phone caller (the identity
    LiveKit's SIP service gives, voice/telephony.py), whose line has none of its own: the web
    page's microphone already applies it (``autoGainControl``, web/voice.js). Its frames are
    then rounded up to whole 10 ms blocks, which the AGC needs."""
    phone = user.startswith(caller_identity(""))
    ms = s.voice_input_frame_ms
    if phone:
        ms = -(-ms // APM_STEP_MS) * APM_STEP_MS
    return room_io.AudioInputOptions(frame_size_ms=ms, sample_rate=INPUT_RATE,
                                     auto_gain_control=phone)
