"""Cloud speech providers (official LiveKit plugins), chosen by setting, against a local
OpenAI-compatible audio server.

The server is a stand-in only for the paid API: it speaks OpenAI's audio protocol over real
HTTP on loopback, transcribes the uploaded WAV with the local Whisper (so the transcript is
right only if the plugin sent the real speech) and answers speech requests with espeak-ng's
audio as 24 kHz PCM, streamed as server-sent events for ``gpt-4o-mini-tts`` (as OpenAI does)
and as raw bytes for ``tts-1``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from livekit import rtc

from agentia.settings import SettingsError, from_env
from sessions.bus import Bus
from tests.conftest import Cluster
from tests.voice.conftest import voice_call
from tests.voice.livekit_server import LiveKitServer
from voice import worker
from voice.caller import speech_48k
from voice.providers import load_plugins
from voice.settings import VoiceSettings
from voice.speech import espeak_pcm, normalise, to_mono16k
from voice.stt_whisper import WhisperSTT

OPENAI_RATE = 24_000
KEY = "sk-local-test"
SENTENCE = "tell me about the weather in paris tomorrow"


@dataclass
class FakeOpenAI:
    """What the server received: one dict a request."""

    whisper: WhisperSTT
    transcriptions: list[dict[str, Any]] = field(default_factory=list)
    speeches: list[dict[str, Any]] = field(default_factory=list)

    async def transcribe(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["file"]
        assert isinstance(upload, web.FileField)
        with wave.open(io.BytesIO(upload.file.read())) as w:
            rate, channels = w.getframerate(), w.getnchannels()
            pcm = w.readframes(w.getnframes())
        frame = rtc.AudioFrame(pcm, rate, channels, len(pcm) // (2 * channels))
        text = await asyncio.to_thread(self.whisper.decode, to_mono16k([frame]))
        self.transcriptions.append({
            "auth": request.headers.get("Authorization"), "model": form.get("model"),
            "response_format": form.get("response_format"), "language": form.get("language"),
            "seconds": frame.duration, "rate": rate})
        body: dict[str, Any] = {"text": text}
        if form.get("response_format") == "verbose_json":
            body |= {"language": "english", "duration": frame.duration, "segments": []}
        return web.json_response(body)

    async def speech(self, request: web.Request) -> web.StreamResponse:
        req = await request.json()
        self.speeches.append(req | {"auth": request.headers.get("Authorization")})
        if req.get("response_format") != "pcm":
            return web.json_response({"error": {"message": "only pcm here"}}, status=400)
        pcm = _to_24k(await espeak_pcm(req["input"]))
        chunks = [pcm[i:i + 9_600] for i in range(0, len(pcm), 9_600)]  # 0.2 s each
        if req.get("stream_format") == "sse":
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for c in chunks:
                event = {"type": "speech.audio.delta", "audio": base64.b64encode(c).decode()}
                await resp.write(f"data: {json.dumps(event)}\n\n".encode())
            done = {"type": "speech.audio.done", "usage": {"input_tokens": 9,
                                                           "output_tokens": 90}}
            await resp.write(f"data: {json.dumps(done)}\n\n".encode())
        else:
            resp = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
            await resp.prepare(request)
            for c in chunks:
                await resp.write(c)
        await resp.write_eof()
        return resp


def _to_24k(pcm22k: bytes) -> bytes:
    frame = rtc.AudioFrame(pcm22k, 22_050, 1, len(pcm22k) // 2)
    rs = rtc.AudioResampler(22_050, OPENAI_RATE, num_channels=1)
    return b"".join(bytes(f.data) for f in [*rs.push(frame), *rs.flush()])


@pytest.fixture(scope="module")
def whisper() -> WhisperSTT:
    return WhisperSTT(threads=2)


@pytest.fixture
async def server(whisper: WhisperSTT) -> AsyncIterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI(whisper)
    app = web.Application()
    app.router.add_post("/v1/audio/transcriptions", fake.transcribe)
    app.router.add_post("/v1/audio/speech", fake.speech)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield fake, f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("stt_model", "tts_model"), [("gpt-4o-mini-transcribe",
                                                       "gpt-4o-mini-tts"),
                                                      ("whisper-1", "tts-1")])
async def test_openai_stt_and_tts_through_an_openai_compatible_server(
        server: tuple[FakeOpenAI, str], monkeypatch: pytest.MonkeyPatch,
        stt_model: str, tts_model: str) -> None:
    fake, url = server
    for name, value in {"OPENAI_API_KEY": KEY, "AGENTIA_VOICE_STT": "openai",
                        "AGENTIA_VOICE_TTS": "openai", "AGENTIA_VOICE_OPENAI_BASE_URL": url,
                        "AGENTIA_VOICE_OPENAI_STT_MODEL": stt_model,
                        "AGENTIA_VOICE_OPENAI_TTS_MODEL": tts_model}.items():
        monkeypatch.setenv(name, value)
    s: VoiceSettings = from_env(VoiceSettings)
    worker.check_speech(s)  # key present, plugin importable
    recog, synth = worker.recogniser(s), worker.synthesiser(s)
    assert (recog.model, synth.model) == (stt_model, tts_model)
    assert not recog.capabilities.streaming  # the worker puts its VAD in front
    try:
        speech = await synth.synthesize(SENTENCE).collect()
        # the caller hears it as a room would carry it (48 kHz), and says it back
        heard = await recog.recognize(_resampled(speech, 48_000))
    finally:
        await recog.aclose()
        await synth.aclose()

    assert speech.sample_rate == OPENAI_RATE and speech.num_channels == 1
    assert 1.5 < speech.duration < 5
    pcm = np.frombuffer(speech.data, dtype=np.int16).astype(np.float64)
    assert float(np.sqrt(np.mean(pcm**2))) > 1_000  # audible, not silence
    assert normalise(heard.alternatives[0].text) == SENTENCE

    [said] = fake.speeches
    assert said["model"] == tts_model and said["input"] == SENTENCE
    assert said["response_format"] == "pcm" and said["voice"] == "ash"
    assert said["stream_format"] == ("sse" if tts_model == "gpt-4o-mini-tts" else "audio")
    assert said["auth"] == f"Bearer {KEY}"
    [asked] = fake.transcriptions
    assert asked["model"] == stt_model and asked["language"] == "en"
    assert asked["response_format"] == ("verbose_json" if stt_model == "whisper-1" else "json")
    assert asked["auth"] == f"Bearer {KEY}"
    assert abs(asked["seconds"] - speech.duration) < 0.1  # the whole utterance was uploaded


def _resampled(frame: rtc.AudioFrame, rate: int) -> list[rtc.AudioFrame]:
    rs = rtc.AudioResampler(frame.sample_rate, rate, num_channels=1)
    return [*rs.push(frame), *rs.flush()]


@pytest.mark.parametrize(("setting", "provider", "key"),
                         [("voice_stt", "openai", "OPENAI_API_KEY"),
                          ("voice_tts", "openai", "OPENAI_API_KEY"),
                          ("voice_stt", "deepgram", "DEEPGRAM_API_KEY")])
def test_a_cloud_provider_without_its_key_is_refused_at_start(
        monkeypatch: pytest.MonkeyPatch, setting: str, provider: str, key: str) -> None:
    monkeypatch.delenv(key, raising=False)
    s = VoiceSettings(**{setting: provider})
    s.validate()  # the control plane reads these settings too: it needs no speech key
    with pytest.raises(SettingsError, match=f"AGENTIA_{setting.upper()}={provider} needs {key}"):
        worker.check_speech(s)
    monkeypatch.setenv(key, "k")
    load_plugins(s)


def test_deepgram_is_its_streaming_plugin_with_the_model_given() -> None:
    s = VoiceSettings(voice_stt="deepgram", voice_deepgram_model="nova-3")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPGRAM_API_KEY", "k")
        recog = worker.recogniser(s)
    assert type(recog).__module__.startswith("livekit.plugins.deepgram")
    assert recog.model == "nova-3" and recog.capabilities.streaming


def test_unknown_providers_and_urls_are_refused() -> None:
    for bad in ({"voice_stt": "cloud"}, {"voice_tts": "polly"},
                {"voice_openai_base_url": "localhost:8000"}):
        with pytest.raises(SettingsError, match="AGENTIA_VOICE_"):
            VoiceSettings(**bad).validate()
    assert worker.synthesiser(VoiceSettings()).model == "espeak-ng-en-us"


@pytest.mark.e2e
async def test_a_call_with_openai_speech_through_the_room(
        server: tuple[FakeOpenAI, str], cluster: Cluster, bus: Bus,
        livekit: LiveKitServer) -> None:
    """The real voice worker process with ``AGENTIA_VOICE_STT=openai``, ``_TTS=openai``: the
    caller's speech reaches the session as a turn, the reply is spoken back."""
    fake, url = server
    cluster.worker()
    cloud = {"OPENAI_API_KEY": KEY, "AGENTIA_VOICE_STT": "openai", "AGENTIA_VOICE_TTS": "openai",
             "AGENTIA_VOICE_OPENAI_BASE_URL": url}
    async with voice_call(cluster, livekit, "alice", prefix="cloud", **cloud) as c:
        chat, caller = c.chat, c.joined
        await chat.until("call", state="joined")
        spoken = await caller.say(await speech_48k(SENTENCE))
        user = await chat.until("user", timeout=20)
        assert (normalise(user["text"]), user["source"]) == (SENTENCE, "voice")
        await chat.until("reply", timeout=20, turn=user["offset"])
        await asyncio.wait_for(caller.heard_agent.wait(), 20)
        await asyncio.sleep(1.0)  # not the whole answer: its first second
        assert caller.loud_between(spoken, spoken + 30) >= 25, \
            "the agent's answer was not audible (under 0.5 s of sound)"
    assert "Traceback" not in c.worker.text(), c.worker.log_path
    heard = [t for t in fake.transcriptions if t["model"] == "gpt-4o-mini-transcribe"]
    assert heard and all(t["auth"] == f"Bearer {KEY}" for t in heard)
    assert fake.speeches and {s["model"] for s in fake.speeches} == {"gpt-4o-mini-tts"}
