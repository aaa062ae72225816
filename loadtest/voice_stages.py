"""Where a voice turn's time goes: the voice worker's turn-timing log lines, summarised.

The worker logs livekit-agents' own measurements of every turn (``voice/bus_llm.py``
``log_timings``, hooked in ``voice/job.py``): for the caller's turn ``transcription_delay``
(end of speech -> final transcript) and ``end_of_turn_delay`` (end of speech -> turn
committed); for the agent's ``llm_node_ttft`` (turn committed -> first text from the bus),
``tts_node_ttfb`` (first text -> first synthesized audio) and ``e2e_latency`` (end of speech ->
first audio frame handed to the room). What remains of the caller-measured figure is the room
(Opus, WebRTC, jitter buffer).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from loadtest.proc_stats import pct

LINE = re.compile(r"(?:user|assistant) turn timings \(ms\): (\{[^}\n]*\})")
RECOGNISER = re.compile(r"recogniser stream closed: (\{[^}\n]*\})")
TURN_ENDS = re.compile(r"turn ends of session \S+: (\{[^}\n]*\})")


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
    return summed(log, RECOGNISER, start)


def turn_ends(log: Path, start: int = 0) -> dict[str, int]:
    """The finished-sentence rule's answers (``voice/job.py`` logs them when a call ends:
    ``finished``, ``unfinished``). Empty for a tree that does not log them."""
    return summed(log, TURN_ENDS, start)


def summed(log: Path, line: re.Pattern[str], start: int = 0) -> dict[str, int]:
    """The counts of every ``line`` (a dict literal) after byte ``start`` of ``log``, summed."""
    try:
        text = log.read_bytes()[start:].decode(errors="replace")
    except OSError:
        return {}
    total: dict[str, int] = {}
    for m in line.finditer(text):
        try:
            counts = ast.literal_eval(m.group(1))
        except (ValueError, SyntaxError):
            continue
        for k, v in counts.items():
            if isinstance(v, int):
                total[k] = total.get(k, 0) + v
    return total


MOMENT = re.compile(r"turn moments: (\{[^}\n]*\})")
PATH = (("caller_end", "speech_end", "caller's end of speech -> the VAD's (uplink, VAD lag)"),
        ("speech_end", "transcript", "-> final transcript"),
        ("speech_end", "turn_end", "-> end of turn"),
        ("speech_end", "asked", "-> turn submitted to the bus"),
        ("transcript", "asked", "of which final transcript -> turn submitted"),
        ("asked", "first_text", "-> its first text back"),
        ("first_text", "first_frame", "-> first audio frame handed to the room (TTS)"),
        ("first_frame", "caller_hears", "-> first loud frame at the caller (downlink)"))
"""The stages of one answer, from the caller's end of speech to the caller hearing it (with
``transcript->asked``, part of ``speech_end->asked``, as a stage of its own per answer: records
before session 20 have only the two from the VAD's end)."""


def moments(log: Path, start: int = 0) -> dict[str, list[dict[str, float]]]:
    """The voice worker's ``turn moments`` lines (wall clock, s; voice/bus_llm.py), by
    session, in log order."""
    try:
        text = log.read_bytes()[start:].decode(errors="replace")
    except OSError:
        return {}
    out: dict[str, list[dict[str, float]]] = {}
    for m in MOMENT.finditer(text):
        try:
            got = ast.literal_eval(m.group(1))
        except (ValueError, SyntaxError):
            continue
        sid = got.pop("session", "")
        out.setdefault(sid, []).append({k: v for k, v in got.items()
                                        if isinstance(v, int | float)})
    return out


def answer_path(found: list[dict[str, float]], end: float, heard: float) -> dict[str, float]:
    """One answer's moments: the caller's end of speech ``end`` and first loud frame
    ``heard`` (wall clock), with the worker's moments of that session between them."""
    out = {"caller_end": end, "caller_hears": heard}
    for m in found:
        for k, v in m.items():
            if k not in out and end - 1.0 < v <= heard:
                out[k] = v
    return out


def path(log: Path, start: int, answers: list[tuple[str, float, float]]) -> dict[str, Any]:
    """p50/p95 (ms) of each stage of the answers ``(session, caller's end of speech, caller
    hears the agent)`` (wall clock), from the worker's moments logged after ``start``."""
    by_sid = moments(log, start)
    vals: dict[str, list[float]] = {}
    for sid, end, heard in answers:
        got = answer_path(by_sid.get(sid, []), end, heard)
        for a, b, _what in PATH:
            if a in got and b in got:
                vals.setdefault(f"{a}->{b}", []).append(1000 * (got[b] - got[a]))
    return {k: {"n": len(v), "p50_ms": round(pct(v, 50)), "p95_ms": round(pct(v, 95))}
            for k, v in vals.items()}


DECODE = re.compile(r"decode timings \(ms\): (\{[^}\n]*\})")


def decodes(log: Path, start: int = 0, end: int | None = None) -> dict[str, Any]:
    """Where the recogniser's time went (``voice/engines.py`` logs each decoding): each
    utterance's wait for an engine and its batch's decoding (p50/p95 ms; early starts that
    were later discarded included), the batches by size, and the interims' decodings; where
    the worker logs it (since session 20), how many decodings came when no other ran or
    waited (``alone``, "n/of the decodings that logged it")."""
    try:
        text = log.read_bytes()[start:end].decode(errors="replace")
    except OSError:
        return {}
    wait: list[float] = []
    took: list[float] = []
    interim: list[float] = []
    sizes: dict[str, int] = {}
    alone = logged = 0
    for m in DECODE.finditer(text):
        try:
            got = ast.literal_eval(m.group(1))
        except (ValueError, SyntaxError):
            continue
        if got.get("interim"):
            interim.append(float(got["decode"]))
            continue
        waits = got.get("wait", [])
        wait += [float(w) for w in waits]
        took += [float(got["decode"])] * len(waits)
        sizes[str(len(waits))] = sizes.get(str(len(waits)), 0) + 1
        if "others" in got:
            logged += 1
            alone += got["others"] == 0
    if not (wait or interim):
        return {}

    def p(v: list[float]) -> dict[str, Any]:
        return {"n": len(v), "p50_ms": round(pct(v, 50)), "p95_ms": round(pct(v, 95))} \
            if v else {"n": 0}

    return {"wait": p(wait), "decode": p(took), "batches": dict(sorted(sizes.items())),
            "interim_decode": p(interim),
            **({"alone": f"{alone}/{logged}"} if logged else {})}


UPLINK = re.compile(r"caller audio jitter buffer of session (\S+): (\{[^}\n]*\})")


def uplink_jitter(log: Path, sessions: set[str], start: int = 0) -> dict[str, Any]:
    """The jitter buffer each of ``sessions``' calls had on its caller's audio (the voice
    worker logs it when a call ends: voice/uplink_stats.py), p50/p95 over the calls (ms).
    Empty for a tree that does not log it."""
    try:
        text = log.read_bytes()[start:].decode(errors="replace")
    except OSError:
        return {}
    vals: dict[str, list[float]] = {}
    for m in UPLINK.finditer(text):
        if m.group(1) not in sessions:
            continue
        try:
            got = ast.literal_eval(m.group(2))
        except (ValueError, SyntaxError):
            continue
        for k, v in got.items():
            if isinstance(v, int | float):
                vals.setdefault(k, []).append(float(v))
    return {k: {"n": len(v), "p50_ms": round(pct(v, 50)), "p95_ms": round(pct(v, 95))}
            for k, v in sorted(vals.items())}


def logs_uplink(log: Path, end: int) -> bool:
    """Whether the worker logged a call's jitter buffer before byte ``end`` (a tree that
    does not log them has none)."""
    try:
        return UPLINK.search(log.read_bytes()[:end].decode(errors="replace")) is not None
    except OSError:
        return False
