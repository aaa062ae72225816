"""Where an answer's time goes, 1 call against K, from ``bench_voice`` records (no run).

Reads ``loadtest/results/<name>.json`` files written by ``loadtest.bench_voice --record`` and
prints, as Markdown, each run's stages (p50 / p95 ms) at one call (the latency phase) and at
each capacity level, then, over every run of the files, the median of each stage's p50 and of
its p95 by level, and their growth over one call::

    python -m loadtest.bench_voice_table loadtest/results/voice-latency-v4calls4.json
    python -m loadtest.bench_voice_table --by-tree loadtest/results/voice-latency-*.json

The stages are the voice worker's logged moments (:data:`loadtest.voice_stages.PATH`),
livekit-agents' own timings (``tts_node_ttfb``: the clause handed to the TTS → its first
synthesised frame) and each utterance's decoding (its engine's wall time).

``transcript→asked`` is a percentile of its own per answer (``transcript->asked``) in records
written since session 20. Older records hold no per-answer stamps, only each stage's n, p50 and
p95: there it is the difference of two stages' percentiles (VAD's end → asked less VAD's end →
transcript), marked ``*`` in the table, which is not the percentile of the difference (the p95s
of two stages need not come from the same answer).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import orjson

STAGES = (
    ("caller→VAD", "path", "caller_end->speech_end"),
    ("VAD→transcript", "path", "speech_end->transcript"),
    ("decoding", "decodes", "decode"),
    ("transcript→asked", "path", "transcript->asked"),
    ("asked→text", "path", "asked->first_text"),
    ("text→frame", "path", "first_text->first_frame"),
    ("tts ttfb", "stages", "tts_node_ttfb"),
    ("frame→heard", "path", "first_frame->caller_hears"),
    ("VAD→frame", "stages", "e2e_latency"),
)
DIFFERENCED = "transcript->asked"
"""The stage older records do not hold: figured from two others (see the module's doc)."""


def _q(level: dict[str, Any], group: str, key: str, q: str) -> float | None:
    got = (level.get(group) or {}).get(key) or {}
    v = got.get(q)
    if isinstance(v, int | float):
        return float(v)
    if key == DIFFERENCED:  # a record before session 20: the two stages' difference
        a, t = (_q(level, "path", k, q) for k in ("speech_end->asked", "speech_end->transcript"))
        return None if a is None or t is None else a - t
    return None


def _differenced(level: dict[str, Any], key: str) -> bool:
    """Whether ``key``'s figure is the difference of two stages' (no percentile of its own)."""
    return key == DIFFERENCED and key not in (level.get("path") or {})


def levels(run: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(label, totals, stages) of one run: 1 call, then each capacity level."""
    e = run.get("end_of_speech_to_first_audio_ms") or {}
    out = []
    if seq := e.get("sequential"):
        out.append(("1", seq, {"path": run.get("path_sequential"),
                               "stages": run.get("stages_sequential"),
                               "decodes": run.get("decodes_sequential")}))
    for c in e.get("concurrent") or []:
        out.append((f"{c['k']} {c.get('starts', 'together')}", c, c))
    return out


def _cell(level: dict[str, Any], group: str, key: str) -> str:
    p50, p95 = _q(level, group, key, "p50_ms"), _q(level, group, key, "p95_ms")
    mark = "*" if _differenced(level, key) else ""
    return "-" if p50 is None else f"{p50:.0f} / {p95:.0f}{mark}"


def table(files: list[Path], by_tree: bool) -> str:
    head = "| run | level | answer | busy % | " + " | ".join(s[0] for s in STAGES) + " |"
    lines = [head, "|" + "---|" * (4 + len(STAGES))]
    medians: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    for f in files:
        for run in orjson.loads(f.read_bytes())["figures"]["runs"]:
            who = f"{f.stem} {run.get('commit', '?')} r{run.get('round', '?')}"
            for label, tot, lv in levels(run):
                busy = tot.get("machine_busy_pct")
                lines.append(f"| {who} | {label} | {tot.get('p50_ms')} / {tot.get('p95_ms')} | "
                             f"{'-' if busy is None else round(busy)} | "
                             + " | ".join(_cell(lv, g, k) for _, g, k in STAGES) + " |")
                for q in ("p50_ms", "p95_ms"):
                    group = medians.setdefault(
                        (q, run.get("commit", "?") if by_tree else "", label), {})
                    group.setdefault("answer", []).append(float(tot.get(q) or 0))
                    for name, g, k in STAGES:
                        if (v := _q(lv, g, k, q)) is not None:
                            group.setdefault(name, []).append(v)
    lines += ["", "\\* the difference of two stages' percentiles (a record without per-answer "
              "``transcript->asked``), not a percentile of its own.",
              "", "Median over the runs of each stage's p50 and p95 (ms), and + over one call:",
              "", "| of | tree | level | runs | answer | " + " | ".join(s[0] for s in STAGES)
              + " |", "|" + "---|" * (5 + len(STAGES))]
    for (q, tree, label), got in sorted(medians.items()):
        one = medians.get((q, tree, "1"), {})
        cells = []
        for name in ("answer", *(s[0] for s in STAGES)):
            runs = got.get(name)
            if not runs:
                cells.append("-")
                continue
            m = statistics.median(runs)
            base = statistics.median(one[name]) if one.get(name) and label != "1" else None
            cells.append(f"{m:.0f}" + ("" if base is None else f" ({m - base:+.0f})"))
        lines.append(f"| {q[:3]} | {tree or 'all'} | {label} | {len(got['answer'])} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", type=Path, nargs="+", help="bench_voice records (JSON)")
    p.add_argument("--by-tree", action="store_true",
                   help="the medians per commit instead of over every run")
    a = p.parse_args()
    print(table(a.files, a.by_tree))


if __name__ == "__main__":
    main()
