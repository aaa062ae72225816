"""Cloud speech through the official LiveKit plugins (OpenAI, Deepgram), chosen by setting.

Every model is an explicit plugin parameter (``openai.STT(model=...)``): never a bare
model-name string given to ``AgentSession``, which livekit-agents would route to LiveKit's
hosted inference. The key is read from the provider's usual variable (``OPENAI_API_KEY``,
``DEEPGRAM_API_KEY``) and passed explicitly; a provider selected without its key is refused by
:meth:`voice.settings.VoiceSettings.validate` at start. ``AGENTIA_VOICE_OPENAI_BASE_URL`` points
both OpenAI plugins at any OpenAI-compatible audio server (a local one included).

The plugins are the optional extra ``agentia[voice-cloud]``: imported only when selected.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from livekit.agents import stt, tts
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from agentia.settings import SettingsError
from voice.settings import KEY_VARS, VoiceSettings


def load_plugins(s: VoiceSettings) -> None:
    """Check the keys and import the selected plugins. Call it on the main thread at start
    (livekit-agents registers a plugin on import and refuses any other thread)."""
    s.check_cloud_keys()
    for what, provider in s.cloud_providers():
        try:
            importlib.import_module(f"livekit.plugins.{provider}")
        except ImportError:
            raise SettingsError(f"AGENTIA_VOICE_{what}={provider} needs its LiveKit plugin: "
                                "pip install 'agentia[voice-cloud]'") from None


def _key(provider: str) -> str:
    return os.environ.get(KEY_VARS[provider], "")


def cloud_recogniser(s: VoiceSettings) -> stt.STT[Any]:
    """The cloud STT of ``AGENTIA_VOICE_STT`` (``openai`` or ``deepgram``).

    OpenAI's is the non-streaming transcription endpoint (``POST /audio/transcriptions``, one
    request an utterance that the worker's VAD cuts, as with Whisper); realtime transcription
    is off (``use_realtime=False``). Deepgram's is its own streaming websocket.
    """
    if s.voice_stt == "openai":
        from livekit.plugins import openai

        return openai.STT(model=s.voice_openai_stt_model, language="en", use_realtime=False,
                          api_key=_key("openai"), base_url=_base_url(s))
    if s.voice_stt == "deepgram":
        from livekit.plugins import deepgram

        return deepgram.STT(model=s.voice_deepgram_model, language="en-US",
                            api_key=_key("deepgram"))
    raise ValueError(f"not a cloud STT: {s.voice_stt!r}")


def cloud_synthesiser(s: VoiceSettings) -> tts.TTS[Any]:
    """OpenAI's TTS (``AGENTIA_VOICE_TTS=openai``): raw 24 kHz PCM (no decoding), its model and
    voice given explicitly."""
    from livekit.plugins import openai

    return openai.TTS(model=s.voice_openai_tts_model, voice=s.voice_openai_tts_voice,
                      response_format="pcm", api_key=_key("openai"), base_url=_base_url(s))


def _base_url(s: VoiceSettings) -> NotGivenOr[str]:
    return s.voice_openai_base_url or NOT_GIVEN
