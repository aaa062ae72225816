"""Where the early decode starts after the VAD's end of speech, room-free and load-free.

    .venv/bin/python -m loadtest.bench_edge [--limit N] [--record]

Each sentence of ``loadtest/wer_sentences.txt``, spoken by two espeak-ng voices
(``loadtest.bench_wer``), and of ``loadtest.bench_voice``'s callers, goes through Silero (the
process's ONNX model, one 32 ms window at 16 kHz at a time, smoothed as livekit-plugins-silero
smooths it) and the recogniser VAD's rule (``voice.shared_vad.Decider``, 0.2 s of silence).
For each utterance it finds the VAD's end of speech (its last window of speech by Silero's
rule: what livekit-agents' ``transcription_delay`` counts from) and the window where
``voice.edge_stt`` starts the early decode, by each rule:

* ``before`` (session 12): ``early_s`` 0.05 of silence by the smoothed probability;
* ``after``: ``early_s`` 0.03 (one window) by the window's own probability (the default
  since session 18);
* ``own 2 windows``: 0.06 (two windows; the default in sessions 13-17); and two more.

Reported: the start after the VAD's end (ms, in 32 ms windows: no clock is read, so the box's
load does not enter), the early starts a resumption of speech discards (wasted decodes), the
early transcripts sent as finals before the VAD's end (the decode done after
``--decode-ms``, the caller silent for ``voice.edge_stt.SEND_S``) and those the caller went on
after (``cut_at_a_pause``: a sentence cut in two finals), and the WER of Whisper (the default
settings) on the audio each rule decodes (up to its start window: the audio the early
transcript is made of).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import utils
from livekit.plugins import silero
from livekit.plugins.silero import onnx_model

from loadtest import bench_wer
from voice.edge_stt import SEND_S, SILERO_DEACTIVATION, SILERO_SMOOTHING, raw_probability
from voice.shared_vad import WINDOW_S, Decider
from voice.speech import STT_RATE, normalise, to_mono16k

WINDOW = 512
"""Samples of one Silero window at 16 kHz."""
TAIL_S = 0.6
"""Silence added after each utterance: the VAD's end needs 0.2 s of it."""
RULES = {"before": (0.05, False, SILERO_DEACTIVATION), "after": (0.03, True, SILERO_DEACTIVATION),
         "own 2 windows": (0.06, True, SILERO_DEACTIVATION),
         "own < 0.1": (0.03, True, 0.1), "own < 0.1, 2 windows": (0.06, True, 0.1)}
"""Rule name: (``early_s``, counted by the window's own probability, below which it is silent)."""
WER_RULES = ("before", "after", "own 2 windows")
"""The rules whose audio Whisper decodes (the others: windows only)."""
DECODE_WINDOWS = 6
"""A decode takes ~0.2 s (6 windows; Whisper base int8 158-250 ms an utterance here): a start
that late after a discarded one is held back by it, and an early transcript is done (and may
be sent) this long after its start (``--decode-ms``)."""


@dataclass
class Edge:
    """One utterance under one rule: the start window kept, and the starts discarded."""

    start: int | None = None
    discarded: int = 0
    quiet_s: float = 0.0
    last_discarded: int = -100
    """The window of the latest discarded start."""
    held: int = 0
    """Kept starts that came within :data:`DECODE_WINDOWS` of a discarded one (they wait)."""
    silent_s: float = 0.0
    """Silence by Silero's rule (the smoothed probability): what ``SEND_S`` counts."""
    sent: bool = False
    """Its early transcript went out as a final before the VAD's end (``EdgeStream``'s rule:
    the decode done and ``SEND_S`` of silence)."""
    sent_early: int = 0
    cuts: int = 0
    """Finals sent early after which the caller went on within the VAD's utterance: a
    sentence cut at a pause (the recogniser's ``resumed``; the session joins the two finals
    into one turn, the first part's preemptive turn cancelled)."""


@dataclass
class Utterance:
    text: str
    pcm: bytes
    end: int = -1
    """The VAD's end of speech: the index of its last window of speech."""
    edges: dict[str, Edge] = field(default_factory=dict)


def probabilities(model: onnx_model.OnnxModel, pcm: bytes) -> list[float]:
    """Silero's smoothed probability of each window (livekit-plugins-silero's ExpFilter)."""
    audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
    smooth = utils.ExpFilter(alpha=SILERO_SMOOTHING)
    return [smooth.apply(exp=1.0, sample=float(model(audio[i:i + WINDOW])))
            for i in range(0, len(audio) - WINDOW + 1, WINDOW)]


def follow(u: Utterance, probs: list[float], opts: Any, decode: int = DECODE_WINDOWS) -> None:
    """The recogniser VAD's utterance(s) over ``probs`` and each rule's early start."""
    decide, prev, speaking = Decider(opts), 0.0, False
    u.edges = {name: Edge() for name in RULES}
    silence = bytes(WINDOW * 2)
    for k, p in enumerate(probs):
        raw, prev = raw_probability(p, prev), p
        ev = decide.window(p, rtc.AudioFrame(silence, STT_RATE, 1, WINDOW))[0]
        if ev.raw_accumulated_speech > 0:  # livekit-agents' last speaking time moves here
            u.end = k
        if speaking:
            for name, (early_s, by_raw, below) in RULES.items():
                _step(u.edges[name], k, p, raw if by_raw else p, early_s, below, decode)
        elif decide.speaking:  # a new utterance: the earlier one's start was its final
            for e in u.edges.values():
                e.start, e.quiet_s, e.silent_s, e.sent = None, 0.0, 0.0, False
        speaking = decide.speaking


def _step(e: Edge, k: int, p: float, own: float, early_s: float, below: float,
          decode: int) -> None:
    """``voice.edge_stt.EdgeStream._heard``'s start, discard and send rule for one window
    (a decode takes ``decode`` windows)."""
    if p > SILERO_DEACTIVATION and own > below:  # speech: a start is discarded
        e.quiet_s = e.silent_s = 0.0
        if e.sent:  # resumed after its final was sent: the rest is a final of its own
            e.sent, e.start, e.cuts = False, None, e.cuts + 1
        elif e.start is not None:
            e.last_discarded, e.start, e.discarded = e.start, None, e.discarded + 1
        return
    e.quiet_s += WINDOW_S
    e.silent_s = e.silent_s + WINDOW_S if p <= SILERO_DEACTIVATION else 0.0
    if (e.start is not None and not e.sent and k - e.start >= decode
            and e.silent_s >= SEND_S - 1e-9):
        e.sent, e.sent_early = True, e.sent_early + 1
    if e.start is None and e.quiet_s >= early_s:
        e.start = k
        e.held += k - e.last_discarded <= decode


def utterances(limit: int | None) -> list[Utterance]:
    from loadtest.bench_voice import SENTENCES
    from voice.caller import speech_48k

    out = []
    for text, _voice, _wpm, frame in bench_wer.utterances(limit):
        out.append(Utterance(text, to_mono16k(frame) + bytes(int(TAIL_S * STT_RATE) * 2)))
    for text in SENTENCES:
        pcm = asyncio.run(speech_48k(text))
        pad = np.zeros(int(0.5 * 48_000), dtype=np.int16)
        audio = np.concatenate([pad, pcm])
        frame = rtc.AudioFrame(audio.tobytes(), 48_000, 1, len(audio))
        out.append(Utterance(text, to_mono16k(frame) + bytes(int(TAIL_S * STT_RATE) * 2)))
    return out


def run(limit: int | None, wer: bool, decode: int = DECODE_WINDOWS) -> dict[str, Any]:
    shared: Any = silero.VAD.load(min_silence_duration=0.2)
    model = onnx_model.OnnxModel(onnx_session=shared._onnx_session, sample_rate=STT_RATE)
    utts = utterances(limit)
    for u in utts:
        follow(u, probabilities(model, u.pcm), shared._opts, decode)
    out: dict[str, Any] = {"utterances": len(utts), "rules": {}}
    whisper = None
    if wer:
        from voice.settings import VoiceSettings
        from voice.worker import whisper as load

        whisper = load(VoiceSettings())
    for name in RULES:
        after = [32 * (k - u.end) for u in utts if (k := u.edges[name].start) is not None]
        res: dict[str, Any] = {
            "started": len(after), "discarded": sum(u.edges[name].discarded for u in utts),
            "held_by_a_discarded_one": sum(u.edges[name].held for u in utts),
            "sent_early": sum(u.edges[name].sent_early for u in utts),
            "cut_at_a_pause": sum(u.edges[name].cuts for u in utts),
            "decode_windows": decode,
            "start_after_vad_end_ms": {"p50": statistics.median(after), "min": min(after),
                                       "max": max(after)},
            "start_after_vad_end_hist_ms": {str(v): after.count(v) for v in sorted(set(after))}}
        if whisper is not None and name in WER_RULES:
            pairs = []
            for u in utts:
                k = u.edges[name].start
                cut = u.pcm if k is None else u.pcm[:(k + 1) * WINDOW * 2]
                pairs.append((u.text, whisper.decode(cut)))
            res["wer"] = round(bench_wer.wer(pairs), 4)
            res["exact"] = sum(normalise(a) == normalise(b) for a, b in pairs)
        out["rules"][name] = res
        print(name, res, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    ap.add_argument("--no-wer", action="store_true", help="only the windows, no Whisper")
    ap.add_argument("--decode-ms", type=float, default=DECODE_WINDOWS * 32,
                    help="how long a decode takes (rounded up to 32 ms windows)")
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--record-as", default="voice-edge", metavar="NAME")
    a = ap.parse_args()
    figures = run(a.limit, not a.no_wer, max(1, -int(-a.decode_ms // 32)))
    if a.record:
        from loadtest.record import record

        print("recorded", record(a.record_as, figures, notes=(
            "espeak-ng sentences through Silero and the recogniser VAD's rule, room-free; "
            "windows of 32 ms, no clock read; WER of the default Whisper on the audio up to "
            "each rule's start window")))


if __name__ == "__main__":
    main()
