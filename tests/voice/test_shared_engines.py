"""Calls as threads of one voice worker (the default executor) share its speech engines.

Real LiveKit server, real voice worker: two calls of two sessions at once, each caller says a
sentence at the same moment; both are transcribed right and answered in their own room, both
calls ran in the worker's own process (no job process), the engines were loaded once, and the
worker's memory grew by far less than a job process (450-520 MB) for the second call, and the
worker with one call stays under a bound the unused end-of-turn model would break.

One Whisper model transcribes two utterances at the same moment (CTranslate2 replicas over one
copy of the weights) with the transcripts it gives one at a time, and loading it with two
replicas costs a bounded amount of memory (two models cost 551 MiB before, one 139).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
from livekit.plugins import silero

from sessions.bus import Bus
from tests.conftest import ROOT, Client, Cluster
from tests.voice.conftest import voice_call, voice_settings
from tests.voice.livekit_server import LiveKitServer
from voice.caller import Caller, speech_48k
from voice.engines import vad_like
from voice.speech import EspeakTTS, SpeechError, normalise, to_mono16k
from voice.stt_whisper import WhisperSTT, compute_type
from voice.tokens import start_call

pytestmark = pytest.mark.e2e

SENTENCES = ("tell me about the weather in paris tomorrow", "tell me a story")
KEY_WORDS = ({"weather", "paris", "tomorrow"}, {"story"})
"""Each sentence's own words, all but one of the first (as tests/voice/test_call.py: through a
room on a starved CPU Whisper's words on espeak-ng vary, "weather" -> "winner" most often) and
none of the other's: each call is transcribed from its own room. The words themselves are
checked exactly room-free below (one model, two utterances at once) and by test_wer."""
MODEL_LOAD_MIB = 200
"""Bound on loading Whisper base with two replicas, after the heap trim (measured 139 MiB; two
models, as before, 551; one model from memory, CTranslate2 keeping the bytes, 262)."""


FLOAT32_MIB = 200
"""What float32 weights add to the voice worker over int8 (base: measured +196 MiB PSS)."""
WORKER_ONE_CALL_MIB = 400 + (FLOAT32_MIB if compute_type("auto") == "float32" else 0)
"""Bound on the voice worker's PSS with one call (Whisper base, 2 replicas; measured 511-552
MiB while livekit-agents' warm-up also loaded its unused end-of-turn model, 243.5 MiB), with
the compute type ``auto`` picks on this CPU (float32 without int8 dot products: measured 461
MiB on an AVX2 box, where int8 held ~265)."""


def pss_mib(pid: int) -> float:
    """PSS of process ``pid`` (0: this one)."""
    with open(f"/proc/{pid or 'self'}/smaps_rollup") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("Pss:")) / 1024


async def test_two_calls_at_once_share_one_process_and_its_engines(
        cluster: Cluster, bus: Bus, livekit: LiveKitServer) -> None:
    cluster.worker()
    async with voice_call(cluster, livekit, "alice", prefix="share") as c:
        worker_pid = c.worker.proc.pid
        one_call = pss_mib(worker_pid)
        edge = cluster.edges[0]
        sid2 = f"share-{uuid.uuid4().hex[:8]}"
        chat2 = await Client.open(edge.port, user="bob", session=sid2)
        caller2: Caller | None = None
        try:
            await chat2.until("welcome")
            call2 = await start_call(voice_settings(c.env), sid2, "bob")
            caller2 = await Caller.join(call2.url, call2.token)
            caller2.open_microphone()
            await caller2.ready(20)
            await asyncio.sleep(0.5)
            pcm = [await speech_48k(s) for s in SENTENCES]
            spoken = await asyncio.gather(c.joined.say(pcm[0]), caller2.say(pcm[1]))
            for chat, own, other in ((c.chat, *KEY_WORDS), (chat2, *reversed(KEY_WORDS))):
                user = await chat.until("user", timeout=30, source="voice")
                heard = set(normalise(user["text"]).split())
                assert len(heard & own) >= max(1, len(own) - 1) and not heard & other, user
                await chat.until("reply", timeout=30, turn=user["offset"])
            for caller, at in zip((c.joined, caller2), spoken, strict=True):
                await asyncio.wait_for(caller.heard_agent.wait(), 30)
                print(f"\nlatency {1000 * (caller.first_loud_after(at) - at):.0f} ms")
            two_calls = pss_mib(worker_pid)
        finally:
            if caller2 is not None:
                await caller2.leave()
            await chat2.close()
        text = c.worker.text()
    pids = set(re.findall(r"call of session share-\w+ in job process (\d+)", text))
    assert pids == {str(worker_pid)}, pids  # both calls are threads of the worker
    assert len(re.findall(r"speech engines loaded in process", text)) == 1
    print(f"worker PSS: {one_call:.0f} MiB with one call, {two_calls:.0f} MiB with two")
    assert one_call < WORKER_ONE_CALL_MIB
    assert two_calls - one_call < 150
    at = text.find("Traceback")
    assert at < 0, text[max(0, at - 1500):at + 3000]


async def test_one_model_transcribes_two_utterances_at_once() -> None:
    whisper = WhisperSTT(model="tiny.en", threads=1, workers=2)
    pcm = [to_mono16k(await EspeakTTS(wpm=170).synthesize(t).collect()) for t in SENTENCES]
    alone = [whisper.decode(p) for p in pcm]
    assert [normalise(t) for t in alone] == list(SENTENCES)
    both_inside = threading.Barrier(2, timeout=30)  # broken unless both windows run at once
    batch = whisper._batch

    def meet_then_decode(audios: Any, frames: tuple[int, int], beam: int) -> list[str]:
        both_inside.wait()
        return batch(audios, frames, beam)

    whisper._batch = meet_then_decode  # type: ignore[method-assign]
    together = await asyncio.gather(*(asyncio.to_thread(whisper.decode, p) for p in pcm))
    assert together == alone


LOAD = """
import gc, json, sys
from voice.engines import trim_heap
from tests.voice.test_shared_engines import pss_mib
import voice.worker  # livekit-agents, onnxruntime, CTranslate2: imported before the baseline
from voice.stt_whisper import WhisperSTT, compute_type
trim_heap(); before = pss_mib(0)
w = WhisperSTT(model=sys.argv[1], workers=int(sys.argv[2]))
gc.collect(); trim_heap()
print(json.dumps({"mib": pss_mib(0) - before}))
"""


def test_one_model_with_two_replicas_costs_bounded_memory(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", LOAD, "base", "2"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    mib = json.loads(done.stdout.splitlines()[-1])["mib"]
    print(f"\nWhisper base, 2 replicas: +{mib:.0f} MiB PSS")
    assert mib < MODEL_LOAD_MIB
    assert list(tmp_path.glob("agentia-whisper-*")) == []  # its temporary directory is gone


def test_the_recognisers_vad_shares_the_turns_onnx_session() -> None:
    turn = cast(silero.VAD, silero.VAD.load(min_silence_duration=0.35))
    stt_vad = vad_like(turn, min_silence_duration=0.2)
    assert stt_vad._onnx_session is turn._onnx_session
    assert (stt_vad._opts.min_silence_duration, turn._opts.min_silence_duration) == (0.2, 0.35)
    assert vad_like(stt_vad)._opts == stt_vad._opts


def test_a_temporary_directory_it_cannot_use_is_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with pytest.raises(SpeechError, match="point TMPDIR at a writable directory"):
        WhisperSTT(model="tiny.en")
