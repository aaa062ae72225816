"""Where a voice turn's time goes: the voice worker's turn-timing log lines, summarised.

The worker logs livekit-agents' own measurements of every turn (``voice/worker.py``,
``_log_timings``): for the caller's turn ``transcription_delay`` (end of speech -> final
transcript) and ``end_of_turn_delay`` (end of speech -> turn committed); for the agent's
``llm_node_ttft`` (turn committed -> first text from the bus), ``tts_node_ttfb`` (first text
-> first synthesized audio) and ``e2e_latency`` (end of speech -> first audio frame handed to
the room). What remains of the caller-measured figure is the room (Opus, WebRTC, jitter buffer).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from loadtest.bench_core import pct

LINE = re.compile(r"(?:user|assistant) turn timings \(ms\): (\{[^}\n]*\})")
RECOGNISER = re.compile(r"recogniser stream closed: (\{[^}\n]*\})")


def log_size(log: Path) -> int:
    try:
        return log.stat().st_size
    except OSError:
        return 0


def stages(log: Path, start: int = 0, end: int | None = None) -> dict[str, Any]:
    """p50/p95 (ms) of each timing the worker logged between byte offsets ``start`` and
    ``end`` of its log."""
    try:
        text = log.read_bytes()[start:end].decode(errors="replace")
    except OSError:
        return {}
    vals: dict[str, list[float]] = {}
    for m in LINE.finditer(text):
        try:
            parts = ast.literal_eval(m.group(1))
        except (ValueError, SyntaxError):
            continue
        for k, v in parts.items():
            if isinstance(v, int | float):
                vals.setdefault(k, []).append(float(v))
    return {k: {"n": len(v), "p50_ms": round(pct(v, 50)), "p95_ms": round(pct(v, 95))}
            for k, v in sorted(vals.items())}


def recogniser_counts(log: Path, start: int = 0) -> dict[str, int]:
    """What the calls' recognisers did (``voice/edge_stt.py`` logs it when a call's stream
    closes): utterances, those transcribed from the speech -> silence edge, early
    transcriptions discarded because the caller resumed (wasted CPU). Empty for a tree that
    does not log it."""
    try:
        text = log.read_bytes()[start:].decode(errors="replace")
    except OSError:
        return {}
    total: dict[str, int] = {}
    for m in RECOGNISER.finditer(text):
        try:
            counts = ast.literal_eval(m.group(1))
        except (ValueError, SyntaxError):
            continue
        for k, v in counts.items():
            if isinstance(v, int):
                total[k] = total.get(k, 0) + v
    return total
