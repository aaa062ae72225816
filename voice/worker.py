"""The voice worker (composition root): a LiveKit Agents worker that puts callers in sessions.

It registers with explicit dispatch (``agent_name``, default ``agentia-voice``): it joins only
the rooms the control plane dispatched it to, and reads the session and user from the job's
metadata. In the room it runs Silero VAD, Whisper (or Moonshine, pocketsphinx) STT on each
utterance, the session's agent through the bus (:class:`voice.bus_llm.BusLLM`) and espeak-ng
(TTS), or cloud speech through the official plugins when chosen (:mod:`voice.providers`). No
model is downloaded and no hosted inference is used: every model is given as an object, never
as a model-name string.

Run with ``python -m voice`` (prints ``AGENTIA_VOICE_READY worker=<id>`` once registered).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from livekit.agents import (
    Agent,
    AgentSession,
    AutoSubscribe,
    JobContext,
    JobExecutorType,
    JobProcess,
    WorkerOptions,
    room_io,
    stt,
    tts,
)
from livekit.plugins import silero

from agentia.settings import SettingsError, from_env
from sessions.bus import Bus, connect
from voice import (
    call_guard,
    call_trace,
    ffi_routing,
    interim,
    loop_monitor,
    pacing,
    shared_vad,
    warm,
)
from voice.bridge import VoiceBridge
from voice.bus_llm import BusLLM, log_timings
from voice.call import CallReporter
from voice.chunking import FirstClauseTokenizer
from voice.engines import EnginePool, PooledSTT, once
from voice.moonshine_model import package_dir, read_pinned
from voice.plain_text import TTS_TEXT_TRANSFORMS
from voice.priority import load_niced
from voice.providers import cloud_recogniser, cloud_synthesiser, load_plugins
from voice.server_load import CallCountServer
from voice.settings import CLOUD_STT, VoiceSettings
from voice.slots import HeldSlot
from voice.speech import EspeakTTS, PocketsphinxSTT, SpeechError
from voice.stt_moonshine import MoonshineSTT
from voice.stt_whisper import PACKAGED, WhisperSTT, compute_type, model_paths, read_weights
from voice.telephony import caller_identity
from voice.tokens import parse_job_metadata
from voice.transcripts import CallerSpeech, SpokenText
from voice.turn_end import SentenceEnd, endpointing, turn_detector, turn_vad_silence
from voice.uplink_stats import UplinkWatch

log = logging.getLogger("agentia.voice")

REGISTER_RETRIES = 1_000_000
"""Connection tries to LiveKit in a row: for ever, in practice (each waits up to 10 s)."""
PREWARM_TIMEOUT_S = 60.0
"""livekit-agents' bound on a job process's (or thread's) prewarm, 10 s by default: loading
Whisper base (read, hash, int8) takes 1-2 s on an idle core but passed 10 s at load average
15-24 here, and livekit-agents then logged a traceback ("error initializing process") and
started it again."""
M_ARENA_MAX = -8
"""glibc's mallopt parameter number (malloc.h)."""
PRELOAD_LOCAL_INFERENCE = "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"
"""livekit-agents' switch for its warm-up's local models (livekit/agents/ipc/_preload.py)."""
INPUT_RATE = 16_000
"""The caller's audio as the call receives it (livekit-agents' default: 24 kHz): Silero's and
Whisper's own rate, so neither resamples it again (the room's audio stream resamples from the
decoder's 48 kHz in Rust either way)."""
APM_STEP_MS = 10
"""WebRTC's audio processing (the AGC) takes whole 10 ms blocks: another frame length makes
its native code panic, which aborts the process."""
INSTRUCTIONS = "Answer through the Agentia session's agent (the bus), never a local model."


def model_pin(s: VoiceSettings) -> tuple[Path | None, str]:
    """(model directory or None for the packaged model's, sha256 its model.bin must have or
    "")."""
    if not s.voice_stt_model_dir:
        return None, s.voice_stt_model_sha256 or PACKAGED[s.voice_stt_model].sha256
    sha = s.voice_stt_model_sha256
    return Path(s.voice_stt_model_dir), "" if sha == "none" else sha


def recogniser(s: VoiceSettings) -> stt.STT[Any]:
    """The configured STT (``AGENTIA_VOICE_STT``); raises SpeechError when it cannot load."""
    if s.voice_stt in CLOUD_STT:
        return cloud_recogniser(s)
    if s.voice_stt == "pocketsphinx":
        return PocketsphinxSTT(s.phrases(), timeout_s=s.voice_stt_timeout_s)
    if s.voice_stt == "moonshine":
        return moonshine(s)
    return whisper(s)


def whisper(s: VoiceSettings, workers: int = 1) -> WhisperSTT:
    """The configured Whisper model, its pinned weights verified, ``workers`` utterances at
    once over one copy of its weights."""
    model_dir, sha = model_pin(s)
    return WhisperSTT(model_dir, model=s.voice_stt_model, sha256=sha,
                      threads=s.voice_stt_threads, context_s=s.voice_stt_context_s,
                      pad_s=s.voice_stt_pad_s, beam_size=s.voice_stt_beam,
                      timeout_s=s.voice_stt_timeout_s, workers=workers,
                      compute=compute_type(s.voice_stt_compute_type))


def moonshine(s: VoiceSettings, workers: int = 1) -> MoonshineSTT:
    """Moonshine base from its pinned wheel, ``workers`` utterances at once over one copy."""
    return MoonshineSTT(threads=s.voice_stt_threads, workers=workers,
                        timeout_s=s.voice_stt_timeout_s)


def synthesiser(s: VoiceSettings) -> tts.TTS[Any]:
    """The configured TTS (``AGENTIA_VOICE_TTS``)."""
    if s.voice_tts == "openai":
        return cloud_synthesiser(s)
    return EspeakTTS(s.voice_espeak, s.voice_espeak_wpm,
                     timeout_s=s.voice_tts_timeout_s, nice=s.voice_tts_nice)


def check_speech(s: VoiceSettings) -> None:
    """At start, before taking calls: the pinned model files are there and unaltered, a cloud
    provider selected has its key and plugin (SettingsError)."""
    load_plugins(s)
    if s.voice_stt == "whisper":
        model_dir, sha = model_pin(s)
        parts = [model_dir / "model.bin"] if model_dir else model_paths(s.voice_stt_model)[0]
        read_weights(parts, sha)
    if s.voice_stt == "moonshine":
        read_pinned(package_dir())


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


def stt_pool(s: VoiceSettings) -> EnginePool:
    """The local recogniser's engines: ``voice_stt_engines`` utterances at once with the
    thread executor (Whisper: one model, that many replicas; Moonshine: one pair of sessions
    that many decodings run on at once; pocketsphinx: that many decoders), one per job process
    otherwise; their threads at ``voice_stt_nice`` (voice/priority.py)."""
    n = s.voice_stt_engines if s.voice_executor == "thread" else 1
    if s.voice_stt == "pocketsphinx":
        sphinx = [PocketsphinxSTT(s.phrases()) for _ in range(n)]
        log.info("speech engines loaded in process %d: %d x %s", os.getpid(), n,
                 sphinx[0].model)
        return EnginePool(list(sphinx), sphinx[0].model)
    shared: WhisperSTT | MoonshineSTT = load_niced(
        lambda: moonshine(s, workers=n) if s.voice_stt == "moonshine" else whisper(s, workers=n),
        s.voice_stt_nice)
    log.info("speech engines loaded in process %d: %d x %s, %s (AGENTIA_VOICE_STT_COMPUTE_TYPE"
             "=%s), nice %+d", os.getpid(), n, shared.model, shared.compute_type,
             s.voice_stt_compute_type, s.voice_stt_nice)
    return EnginePool([shared] * n, shared.model)


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


def options(s: VoiceSettings) -> WorkerOptions:
    calls = s.voice_max_calls
    extra: dict[str, Any] = {}
    if calls:  # load = share of the calls it takes; full (1.0) at the last one
        extra = {"load_fnc": lambda server: min(1.0, len(server.active_jobs) / calls),
                 "load_threshold": 1.0}
    return WorkerOptions(
        entrypoint_fnc=entrypoint, prewarm_fnc=prewarm, agent_name=s.voice_agent_name,
        ws_url=s.livekit_url, api_key=s.livekit_api_key, api_secret=s.livekit_api_secret,
        job_executor_type=(JobExecutorType.PROCESS if s.voice_executor == "process"
                           else JobExecutorType.THREAD),
        num_idle_processes=s.voice_idle_processes,
        initialize_process_timeout=PREWARM_TIMEOUT_S,
        # LiveKit restarted or drained: register again when it is back (a try every 10 s at
        # most, livekit-agents' back-off) rather than exit after its default 16 tries
        max_retry=REGISTER_RETRIES,
        **({"load_threshold": s.voice_load_threshold} | extra), port=0, host="127.0.0.1")


async def serve(s: VoiceSettings) -> None:
    """Run until SIGTERM/SIGINT, then drain the calls in progress."""
    server = CallCountServer.from_server_options(options(s))
    assert isinstance(server, CallCountServer)
    server.calls = s.voice_max_calls
    server.on("worker_registered", lambda wid, _info: print(
        f"AGENTIA_VOICE_READY worker={wid} pid={os.getpid()}", flush=True))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    run = asyncio.create_task(server.run())
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({run, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if not run.done():
        with contextlib.suppress(Exception):
            await server.drain(timeout=s.voice_drain_s)
    await server.aclose()
    waiter.cancel()
    await asyncio.gather(run, waiter, return_exceptions=True)


def limit_malloc_arenas(s: VoiceSettings) -> None:
    """Before the calls' threads start: at most ``voice_malloc_arenas`` glibc arenas (see the
    setting; measured in docs/voice.md)."""
    if s.voice_executor != "thread" or not s.voice_malloc_arenas:
        return
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl has no arenas to limit)
        return
    libc.mallopt(M_ARENA_MAX, s.voice_malloc_arenas)


def skip_unused_models(s: VoiceSettings) -> None:
    """livekit-agents' warm-up, run by the first job of a process (the worker's own with the
    thread executor, the forkserver's with the process one), loads its local VAD and, in a
    process without a multiprocessing parent, the end-of-turn model's weights: +243.5 MiB PSS
    that nothing here uses unless ``AGENTIA_VOICE_TURN_DETECTION=model`` (the VAD is Silero).
    With ``sentence`` or ``vad`` neither is loaded; ``LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE``
    set in the environment wins. Must run before the first job starts (the warm-up reads it
    then)."""
    if s.voice_turn_detection != "model":
        os.environ.setdefault(PRELOAD_LOCAL_INFERENCE, "0")


def main(redis_url: str | None = None) -> None:
    """Run the voice worker (``agentia voice`` / ``python -m voice``) until SIGTERM."""
    from agentia.logs import setup

    s: VoiceSettings = from_env(VoiceSettings, redis_url=redis_url)
    setup(s.log_level, json_lines=s.log_json)
    limit_malloc_arenas(s)
    skip_unused_models(s)
    loop_monitor.coarse_tick()
    quiet_room_gone()  # the thread executor's jobs log here
    try:
        check_speech(s)
    except (SpeechError, SettingsError) as exc:
        raise SystemExit(f"agentia voice: {exc}") from None
    asyncio.run(serve(s))
