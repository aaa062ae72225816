"""bench_voice_table's ``transcript→asked``: a percentile of its own per answer where the record
holds it, the difference of two stages' percentiles (marked) in an older record."""

from __future__ import annotations

from pathlib import Path

import orjson

from loadtest.bench_voice_table import table
from loadtest.voice_stages import path


def _answer(sid: str, end: float, transcript: float, asked: float) -> str:
    moments = {"session": sid, "speech_end": end + 0.1, "transcript": end + transcript,
               "asked": end + asked, "first_text": end + asked + 0.03,
               "first_frame": end + asked + 0.1}
    return f"x turn moments: {moments}\n"


def test_transcript_to_asked_is_each_answers_own_stage(tmp_path: Path) -> None:
    log = tmp_path / "voice.log"
    # answer 1: a slow transcript, a quick ask; answer 2: the other way round: the difference
    # of the two stages' p95s (0.50 - 0.45) is not any answer's own 0.10 or 0.05
    log.write_text(_answer("a", 100.0, 0.45, 0.50) + _answer("b", 200.0, 0.20, 0.30))
    got = path(log, 0, [("a", 100.0, 100.7), ("b", 200.0, 200.5)])
    assert got["transcript->asked"] == {"n": 2, "p50_ms": 100, "p95_ms": 100}
    assert got["speech_end->asked"]["p95_ms"] - got["speech_end->transcript"]["p95_ms"] == 50


def _record(tmp_path: Path, name: str, path_fig: dict[str, dict[str, int]]) -> Path:
    run = {"commit": "c0ffee", "round": 0, "path_sequential": path_fig,
           "end_of_speech_to_first_audio_ms": {"sequential": {"p50_ms": 600, "p95_ms": 700}}}
    f = tmp_path / f"{name}.json"
    f.write_bytes(orjson.dumps({"figures": {"runs": [run]}}))
    return f


def test_the_table_takes_the_own_stage_and_marks_a_difference(tmp_path: Path) -> None:
    old = {"speech_end->asked": {"n": 2, "p50_ms": 300, "p95_ms": 500},
           "speech_end->transcript": {"n": 2, "p50_ms": 200, "p95_ms": 450}}
    new = {**old, "transcript->asked": {"n": 2, "p50_ms": 100, "p95_ms": 100}}
    old_row = table([_record(tmp_path, "old", old)], by_tree=False).splitlines()[2]
    new_row = table([_record(tmp_path, "new", new)], by_tree=False).splitlines()[2]
    assert "| 100 / 50* |" in old_row
    assert "| 100 / 100 |" in new_row and "*" not in new_row
