"""The voice worker (composition root): a LiveKit Agents worker that puts callers in sessions.

It registers with explicit dispatch (``agent_name``, default ``agentia-voice``): it joins only
the rooms the control plane dispatched it to, and reads the session and user from the job's
metadata. In the room it runs Silero VAD, Whisper (or Moonshine, pocketsphinx) STT on each
utterance, the session's agent through the bus (:class:`voice.bus_llm.BusLLM`) and espeak-ng
(TTS), or cloud speech through the official plugins when chosen (:mod:`voice.providers`). No
model is downloaded and no hosted inference is used: every model is given as an object, never
as a model-name string.

Here: the worker's options, its run and drain, and the process settings that must precede the
first job. One call's wiring is :mod:`voice.job`; the speech objects the settings name are
:mod:`voice.speech_setup`.

Run with ``python -m voice`` (prints ``AGENTIA_VOICE_READY worker=<id>`` once registered).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from typing import Any

from livekit.agents import JobExecutorType, WorkerOptions

from agentia.settings import SettingsError, from_env
from voice import loop_monitor
from voice.job import INPUT_RATE, audio_input, entrypoint, prewarm, quiet_room_gone
from voice.server_load import CallCountServer
from voice.settings import VoiceSettings
from voice.speech import SpeechError
from voice.speech_setup import (
    check_speech,
    model_pin,
    moonshine,
    recogniser,
    stt_pool,
    synthesiser,
    whisper,
)

__all__ = [  # the call's pieces, importable from here as before the split
    "INPUT_RATE", "PRELOAD_LOCAL_INFERENCE", "audio_input", "check_speech", "entrypoint",
    "main", "model_pin", "moonshine", "options", "prewarm", "recogniser", "serve",
    "skip_unused_models", "stt_pool", "synthesiser", "whisper",
]

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
