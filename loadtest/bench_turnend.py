"""How often the finished-sentence rule (voice/turn_end.py) would cut a sentence at a pause.

    .venv/bin/python -m loadtest.bench_turnend [--record] [--limit N] [--stt whisper]

With ``AGENTIA_VOICE_TURN_DETECTION=sentence`` a pause of ``AGENTIA_VOICE_FINISHED_SILENCE_S``
(0.2 s) ends the turn when the transcript heard so far sounds finished; before, only a pause
of ``AGENTIA_VOICE_MIN_SILENCE_S`` (0.35 s) did. So the rule's cost is the share of the
sentence *prefixes* (the words before a pause) whose transcript it calls finished: each is a
sentence cut by a 0.2-0.35 s pause at that word boundary. Its reach is the share of *whole*
sentences it calls finished: those turns end 0.15 s sooner.

Each sentence of ``loadtest/wer_sentences.txt`` (spoken by one of bench_wer's espeak-ng
voices in turn, padded as the VAD cuts it) and each of its prefixes of 2 to n-1 words is
transcribed by the recogniser the worker builds (``voice.worker.recogniser``, its defaults:
Whisper base) and judged by :func:`voice.turn_end.judge_for`. A pause anywhere is assumed
equally likely (no human speech was measured here to weight the boundaries). ``--record``
writes ``loadtest/results/voice-turn-end.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from loadtest.bench_wer import VOICES, sentences, speak
from voice.settings import VoiceSettings
from voice.turn_end import judge_for

EXAMPLES = 40
"""Cut prefixes listed in the record (the rest are counted)."""


def prefixes(text: str) -> list[str]:
    """The sentence's first 2 .. n-1 words (where an inner pause could fall)."""
    words = text.split()
    return [" ".join(words[:k]) for k in range(2, len(words))]


async def run(limit: int | None, stt_name: str) -> dict[str, Any]:
    from voice.worker import recogniser

    s = VoiceSettings(voice_stt=stt_name, voice_stt_timeout_s=60.0)
    stt, judge = recogniser(s), judge_for(s.voice_stt, s.voice_phrases)
    whole = cut = punctuated = total = 0
    unfinished_whole: list[str] = []
    cuts: list[dict[str, str]] = []
    by_word: dict[str, list[int]] = {}
    said = sentences()[:limit]
    t0 = time.perf_counter()
    for i, text in enumerate(said):
        voice, wpm = VOICES[i % len(VOICES)]
        heard = await _heard(stt, text, voice, wpm)
        if judge(heard):
            whole += 1
        else:
            unfinished_whole.append(heard)
        for part in prefixes(text):
            heard = await _heard(stt, part, voice, wpm)
            total += 1
            punctuated += heard.rstrip().endswith((".", "?", "!"))
            last = part.split()[-1]
            tally = by_word.setdefault(last, [0, 0])
            tally[1] += 1
            if judge(heard):
                cut += 1
                tally[0] += 1
                if len(cuts) < EXAMPLES:
                    cuts.append({"said": part, "heard": heard})
        print(f"{i + 1}/{len(said)} sentences: whole finished {whole}, prefixes cut "
              f"{cut}/{total}", flush=True)
    worst = sorted(((w, c, n) for w, (c, n) in by_word.items() if c), key=lambda x: -x[1])
    return {
        "stt": stt.model, "sentences": len(said), "prefixes": total,
        "whole_finished": whole, "whole_finished_share": round(whole / len(said), 3),
        "prefixes_cut": cut, "prefixes_cut_share": round(cut / total, 3) if total else 0.0,
        "prefixes_punctuated": punctuated,
        "prefixes_punctuated_share": round(punctuated / total, 3) if total else 0.0,
        "cut_by_last_word": {w: f"{c}/{n}" for w, c, n in worst},
        "cut_examples": cuts, "whole_unfinished": unfinished_whole,
        "wall_s": round(time.perf_counter() - t0, 1), "load_avg": os.getloadavg()[0],
    }


async def _heard(stt: Any, text: str, voice: str, wpm: int) -> str:
    ev = await stt.recognize(speak(text, voice, wpm))
    return str(ev.alternatives[0].text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    ap.add_argument("--stt", choices=("whisper", "pocketsphinx"), default="whisper")
    ap.add_argument("--record", action="store_true", help="write results/voice-turn-end.json")
    args = ap.parse_args()
    figures = asyncio.run(run(args.limit, args.stt))
    print({k: v for k, v in figures.items() if k not in ("cut_examples", "whole_unfinished")})
    if args.record:
        from loadtest.record import record

        path = record("voice-turn-end", figures, notes=(
            "espeak-ng sentences (loadtest/wer_sentences.txt) and their prefixes of 2..n-1 "
            "words, one voice each (bench_wer's, in turn), through voice.worker.recogniser; "
            "judged by voice.turn_end.judge_for on the recogniser's own text"))
        print(f"recorded {path}")


if __name__ == "__main__":
    main()
