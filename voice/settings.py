"""Settings of the voice worker and of the control plane's voice route (``AGENTIA_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agentia.settings import Common, SettingsError

DEFAULT_PHRASES = Path(__file__).resolve().parent / "phrases.txt"


@dataclass(slots=True)
class VoiceSettings(Common):
    livekit_url: str = "ws://127.0.0.1:7880"
    """The LiveKit server (``ws://`` or ``wss://``); its HTTP API is the same host and port."""
    livekit_api_key: str = "devkey"
    livekit_api_secret: str = "secret"
    """The ``--dev`` server's pair; set both in production (never logged)."""
    voice_agent_name: str = "agentia-voice"
    """Explicit dispatch name: the worker takes only jobs created for this name."""
    voice_executor: str = "process"
    """``process`` (a job per process, isolated) or ``thread`` (lighter, for tests)."""
    voice_idle_processes: int = 1
    """Job processes kept warm (models loaded) ahead of calls."""
    voice_load_threshold: float = 0.75
    """CPU load above which the worker stops taking calls (LiveKit's own measure)."""
    voice_phrases: str = str(DEFAULT_PHRASES)
    """File of phrases (one a line) the offline recogniser listens for; empty: open
    vocabulary (pocketsphinx's en-us language model, poor on free speech)."""
    voice_espeak: str = "en-us"
    """espeak-ng voice of the agent."""
    voice_espeak_wpm: int = 190
    voice_min_silence_s: float = 0.35
    """Silence (Silero VAD) that ends an utterance."""
    voice_endpoint_delay_s: float = 0.2
    """Extra wait after the end of an utterance before the turn is sent to the agent."""
    voice_room_prefix: str = "agentia-call-"
    voice_token_ttl_s: int = 3600
    voice_drain_s: int = 30
    """On SIGTERM, calls in progress get this long to end before they are cut."""

    def validate(self) -> None:
        Common.validate(self)
        if not self.livekit_url.startswith(("ws://", "wss://", "http://", "https://")):
            raise SettingsError("AGENTIA_LIVEKIT_URL must start with ws://, wss://, http(s)://")
        if self.voice_executor not in ("process", "thread"):
            raise SettingsError("AGENTIA_VOICE_EXECUTOR must be 'process' or 'thread'")
        if self.voice_idle_processes < 0 or self.voice_load_threshold <= 0:
            raise SettingsError("AGENTIA_VOICE_IDLE_PROCESSES >= 0 and "
                                "AGENTIA_VOICE_LOAD_THRESHOLD > 0 are required")
        if not 0.1 <= self.voice_min_silence_s <= 5 or not 0 <= self.voice_endpoint_delay_s <= 5:
            raise SettingsError("AGENTIA_VOICE_MIN_SILENCE_S must be in [0.1, 5] and "
                                "AGENTIA_VOICE_ENDPOINT_DELAY_S in [0, 5]")
        if self.voice_phrases and not Path(self.voice_phrases).is_file():
            raise SettingsError(f"AGENTIA_VOICE_PHRASES={self.voice_phrases!r} is not a file")

    @property
    def http_url(self) -> str:
        """The LiveKit server API's base URL."""
        return self.livekit_url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)

    def phrases(self) -> list[str]:
        if not self.voice_phrases:
            return []
        lines = Path(self.voice_phrases).read_text().splitlines()
        return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
