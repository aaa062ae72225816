"""Word error rate and time of the offline STT on everyday sentences spoken by espeak-ng.

    .venv/bin/python -m loadtest.bench_wer [--record] [--candidates before,after] [--limit N]
    .venv/bin/python -m loadtest.bench_wer --candidates after --batch 4   # batched decoding
    .venv/bin/python -m loadtest.bench_wer --candidates after,moonshine   # Whisper vs Moonshine

Each sentence of ``loadtest/wer_sentences.txt`` is spoken by two of :data:`VOICES` (espeak-ng
voices at 140-190 words a minute), resampled by sox to 48 kHz (a LiveKit room's rate), padded
with the silence Silero VAD leaves around an utterance in the worker (0.5 s before, 0.2 s
after), then transcribed by each candidate STT exactly as the voice worker makes it
(``voice.worker.recogniser`` on ``VoiceSettings`` with the candidate's settings, the same
``recognize`` path with its own 16 kHz resampling), one utterance at a time. Reference and
transcript are compared after ``voice.speech.normalise`` (so "10" and "ten" are the same word).

WER = (substitutions + deletions + insertions) / reference words, over all utterances. The STT
time is per utterance: wall (this machine is shared: noisy) and CPU of this process (all its
threads; steadier). ``--record`` writes ``loadtest/results/voice-wer.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livekit import rtc

from agentia.settings import SettingsError
from voice.settings import VoiceSettings
from voice.speech import SpeechError, normalise

SENTENCES = Path(__file__).resolve().parent / "wer_sentences.txt"
VOICES = (("en-us", 175), ("en-gb", 160), ("en-gb-x-rp", 140), ("en-us+f3", 190))
"""(espeak-ng voice, words a minute); sentence i is spoken with voices i and i + 2 (mod 4)."""
ROOM_RATE = 48_000
PAD_BEFORE_S, PAD_AFTER_S = 0.5, 0.2
"""Silero's prefix padding and the STT's end-of-utterance silence in the worker."""
ALIASES = {"before": "tiny.en@30", "after": "base@7+1.5/5"}
""""before" is the STT as it was (tiny.en, Whisper's 30 s window, greedy); "after" the default
(base, a window of the utterance + 1.5 s of silence, at least 7 s, beam 5)."""
OTHER_ENGINES = ("moonshine",)
"""Candidates that are another recogniser (``AGENTIA_VOICE_STT``), with its own settings:
``moonshine[xTHREADS]``."""
DEFAULT_CANDIDATES = "before,base@10/5,after,base@5+1.5/5,base@4+1/5,moonshine"
BENCH_TIMEOUT_S = 60.0
"""Per utterance: the worker's 5 s bound measures the machine's load, not the model."""


@dataclass(frozen=True)
class Errors:
    """Word-level edit operations turning a reference into a transcript."""

    sub: int = 0
    dele: int = 0
    ins: int = 0

    @property
    def total(self) -> int:
        return self.sub + self.dele + self.ins

    def __add__(self, other: Errors) -> Errors:
        return Errors(self.sub + other.sub, self.dele + other.dele, self.ins + other.ins)


def candidate(spec: str) -> dict[str, Any]:
    """Settings of a candidate ``MODEL@CONTEXT_S[+PAD_S][/BEAM][xTHREADS][:COMPUTE]`` (or an
    alias, with or without ``:COMPUTE``), on top of ``VoiceSettings()``: the encoder reads the
    utterance and PAD_S of silence (0 unless given), at least CONTEXT_S seconds; greedy unless
    BEAM; the worker's CPU threads (``AGENTIA_VOICE_STT_THREADS``) unless THREADS; CTranslate2's
    compute type (``AGENTIA_VOICE_STT_COMPUTE_TYPE``: int8, int8_float32, float32, auto) the
    worker's default unless COMPUTE. ``moonshine[xTHREADS]``: Moonshine base
    (:data:`OTHER_ENGINES`)."""
    spec, _, compute = spec.partition(":")
    spec, _, threads = ALIASES.get(spec, spec).partition("x")
    if spec in OTHER_ENGINES:
        return {"voice_stt": spec, "voice_stt_threads": int(threads) if threads
                else VoiceSettings().voice_stt_threads}
    model, _, rest = spec.partition("@")
    window, _, beam = rest.partition("/")
    context, _, pad = window.partition("+")
    return {"voice_stt_model": model, "voice_stt_context_s": float(context or 10),
            "voice_stt_pad_s": float(pad or 0), "voice_stt_beam": int(beam or 1),
            "voice_stt_threads": int(threads) if threads else VoiceSettings().voice_stt_threads,
            "voice_stt_compute_type": compute or VoiceSettings().voice_stt_compute_type}


def word_errors(reference: str, hypothesis: str) -> Errors:
    """The fewest substitutions, deletions and insertions of words from ``reference`` to
    ``hypothesis`` (Levenshtein on words; ties prefer substitutions)."""
    ref, hyp = reference.split(), hypothesis.split()
    # row[j]: the best Errors turning ref[:i] into hyp[:j]
    row = [Errors(ins=j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        prev, row = row, [Errors(dele=i)]
        for j in range(1, len(hyp) + 1):
            same = ref[i - 1] == hyp[j - 1]
            options = (prev[j - 1] + Errors(sub=0 if same else 1), prev[j] + Errors(dele=1),
                       row[j - 1] + Errors(ins=1))
            row.append(min(options, key=lambda e: (e.total, -e.sub)))
    return row[-1]


def wer(pairs: list[tuple[str, str]]) -> float:
    """Word error rate of (reference, transcript) pairs, both normalised first."""
    words = sum(len(normalise(r).split()) for r, _ in pairs)
    errors = sum(word_errors(normalise(r), normalise(h)).total for r, h in pairs)
    return errors / words if words else 0.0


def sentences(path: Path = SENTENCES) -> list[str]:
    lines = (ln.strip() for ln in path.read_text().splitlines())
    return [ln for ln in lines if ln and not ln.startswith("#")]


def speak(text: str, voice: str, wpm: int) -> rtc.AudioFrame:
    """espeak-ng's speech of ``text`` resampled by sox to 48 kHz, padded as the VAD cuts it."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SpeechError(f"{tool} is not installed (apt-get install {tool})")
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "--stdout", text],
                         capture_output=True, check=True, timeout=30).stdout
    raw = subprocess.run(["sox", "-t", "wav", "-", "-t", "raw", "-r", str(ROOM_RATE), "-e",
                          "signed", "-b", "16", "-c", "1", "-"],
                         input=wav, capture_output=True, check=True, timeout=30).stdout
    pcm = (bytes(2 * int(ROOM_RATE * PAD_BEFORE_S)) + raw
           + bytes(2 * int(ROOM_RATE * PAD_AFTER_S)))
    return rtc.AudioFrame(pcm, ROOM_RATE, 1, len(pcm) // 2)


def utterances(limit: int | None = None) -> list[tuple[str, str, int, rtc.AudioFrame]]:
    """(sentence, voice, wpm, audio) for every sentence spoken by two voices."""
    out = []
    for i, text in enumerate(sentences()[:limit]):
        for k in (i % len(VOICES), (i + 2) % len(VOICES)):
            voice, wpm = VOICES[k]
            out.append((text, voice, wpm, speak(text, voice, wpm)))
    return out


def _pct(samples: list[float], q: int) -> float:
    return round(statistics.quantiles(samples, n=100, method="inclusive")[q - 1] * 1000, 1)


async def measure(name: str, utts: list[tuple[str, str, int, rtc.AudioFrame]],
                  batch: int = 1) -> dict[str, Any]:
    """One candidate over every utterance: WER, its parts, per-voice WER, STT time (per
    utterance: a batch's time divided by its size)."""
    from voice.worker import recogniser

    s = VoiceSettings(**candidate(name), voice_stt_timeout_s=BENCH_TIMEOUT_S)
    t = time.perf_counter()
    stt = recogniser(s)
    load_s = time.perf_counter() - t
    walls, cpus, rows = [], [], []
    total, by_voice = Errors(), dict[str, list[tuple[str, str]]]()
    for i in range(0, len(utts), batch):
        group = utts[i:i + batch]
        t, c = time.perf_counter(), time.process_time()
        texts = await _transcribe(stt, [u[3] for u in group])
        walls += [(time.perf_counter() - t) / len(group)] * len(group)
        cpus += [(time.process_time() - c) / len(group)] * len(group)
        for (text, voice, wpm, _), heard in zip(group, texts, strict=True):
            e = word_errors(normalise(text), normalise(heard))
            total += e
            by_voice.setdefault(f"{voice}@{wpm}", []).append((text, heard))
            if e.total:
                rows.append({"said": text, "heard": heard, "voice": voice, "wpm": wpm,
                             "errors": e.total})
    words = sum(len(normalise(u[0]).split()) for u in utts)
    return {
        "settings": candidate(name), "model": stt.model,
        "compute_type": getattr(stt, "compute_type", None), "load_s": round(load_s, 2),
        "batch": batch, "utterances": len(utts), "words": words,
        "wer": round(total.total / words, 4),
        "substitutions": total.sub, "deletions": total.dele, "insertions": total.ins,
        "exact": len(utts) - len(rows),
        "wer_by_voice": {v: round(wer(p), 4) for v, p in by_voice.items()},
        "stt_wall_ms": {"p50": _pct(walls, 50), "p90": _pct(walls, 90)},
        "stt_cpu_ms": {"p50": _pct(cpus, 50), "p90": _pct(cpus, 90)},
        "errors": rows,
    }


async def _transcribe(stt: Any, audios: list[rtc.AudioFrame]) -> list[str]:
    """One utterance as a call transcribes it (``recognize``), or several decoded as one batch
    the way the worker's engine pool does (``decode_many``: voice.engines.EnginePool; an engine
    without it decodes them one after the other, as the pool does)."""
    if len(audios) == 1:
        return [(await stt.recognize(audios[0])).alternatives[0].text]
    from voice.speech import to_mono16k

    pcms = [to_mono16k(a) for a in audios]
    many = getattr(stt, "decode_many", None)  # Moonshine has none: one after the other
    return list(await asyncio.to_thread(many or (lambda ps: [stt.decode(p) for p in ps]), pcms))


async def run(names: list[str], limit: int | None, batches: tuple[int, ...] = (1,)
              ) -> dict[str, Any]:
    utts = utterances(limit)
    seconds = [u[3].samples_per_channel / ROOM_RATE for u in utts]
    out: dict[str, Any] = {
        "sentences": len(utts) // 2, "voices": [f"{v}@{w}" for v, w in VOICES],
        "utterance_s": {"p50": round(statistics.median(seconds), 2), "max": round(max(seconds), 2)},
        "load_avg_before": os.getloadavg()[0], "candidates": {}}
    for name, batch in ((n, b) for n in names for b in batches):
        key = name if batch == 1 else f"{name} batch {batch}"
        out["candidates"][key] = res = await measure(name, utts, batch)
        print(f"{key:12} {res['model']:24} WER {res['wer']:.3f} exact {res['exact']}/"
              f"{res['utterances']} STT wall p50 {res['stt_wall_ms']['p50']} ms, "
              f"CPU p50 {res['stt_cpu_ms']['p50']} ms", flush=True)
    out["load_avg_after"] = os.getloadavg()[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidates", default=DEFAULT_CANDIDATES,
                    help="comma-separated Whisper MODEL@CONTEXT_S[+PAD_S][/BEAM][xTHREADS], "
                         "before/after, or moonshine[xTHREADS] "
                         f"(default {DEFAULT_CANDIDATES})")
    ap.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    ap.add_argument("--batch", default="1",
                    help="comma-separated N: decode the utterances N at a time in one batch, "
                         "as the worker's engine pool does when calls' utterances end "
                         "together (Whisper; each candidate at each N)")
    ap.add_argument("--record", action="store_true", help="write results/voice-wer.json")
    ap.add_argument("--record-as", default="voice-wer", metavar="NAME",
                    help="--record writes loadtest/results/NAME.json instead")
    args = ap.parse_args()
    names = [n for n in args.candidates.split(",") if n]
    for n in names:
        try:
            VoiceSettings(**candidate(n)).validate()
        except (ValueError, SettingsError) as exc:
            ap.error(f"candidate {n!r}: {exc}")
    try:
        batches = tuple(int(b) for b in args.batch.split(",") if b)
    except ValueError:
        batches = ()
    if not batches or not all(1 <= b <= 16 for b in batches):
        ap.error("--batch: comma-separated integers in [1, 16]")
    figures = asyncio.run(run(names, args.limit, batches))
    if args.record:
        from loadtest.record import record

        path = record(args.record_as, figures, notes=(
            "espeak-ng sentences (loadtest/wer_sentences.txt), two voices each, through "
            "voice.worker.recogniser one at a time; CPU-ms is this process's CPU time"))
        print(f"recorded {path}")


if __name__ == "__main__":
    main()
