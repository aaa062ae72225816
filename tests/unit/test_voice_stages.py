"""bench_voice's stage budget: the voice worker's turn-timing log lines, summarised."""

from __future__ import annotations

from pathlib import Path

from loadtest.voice_stages import (
    decodes,
    log_size,
    logs_uplink,
    recogniser_counts,
    stages,
    turn_ends,
    uplink_jitter,
)

LOG = """\
2026-12-06 09:25:22,971 INFO    agentia.voice: user turn timings (ms): {'transcription_delay': 1244, 'end_of_turn_delay': 1245}
2026-12-06 09:25:23,524 INFO    agentia.voice: assistant turn timings (ms): {'llm_node_ttft': 97, 'e2e_latency': 1413}
2026-12-06 09:25:25,541 WARNING livekit: something else {'e2e_latency': 1}
2026-12-06 09:25:27,310 INFO    agentia.voice: user turn timings (ms): {'transcription_delay': 1649, 'end_of_turn_delay': 1649}
2026-12-06 09:25:35,766 INFO    agentia.voice: assistant turn timings (ms): {'llm_node_ttft': 142, 'e2e_latency': 1902}
2026-12-06 09:25:36,001 INFO    agentia.voice: recogniser stream closed: {'utterances': 2, 'at_the_edge': 1, 'discarded': 3}
2026-12-06 09:25:37,001 INFO    agentia.voice: recogniser stream closed: {'utterances': 1, 'at_the_edge': 1, 'discarded': 0}
2026-12-06 09:25:37,002 INFO    agentia.voice: turn ends of session bench-1: {'finished': 2, 'unfinished': 1}
2026-12-06 09:25:38,002 INFO    agentia.voice: turn ends of session bench-2: {'finished': 1, 'unfinished': 0}
"""  # noqa: E501


def test_each_timing_is_summarised_from_the_offset_on(tmp_path: Path) -> None:
    log = tmp_path / "voice.log"
    log.write_text(LOG)
    got = stages(log)
    assert got["e2e_latency"] == {"n": 2, "p50_ms": 1902, "p95_ms": 1902}
    assert got["transcription_delay"]["n"] == 2
    assert set(got) == {"transcription_delay", "end_of_turn_delay", "llm_node_ttft",
                        "e2e_latency"}
    second_half = LOG.index("2026-12-06 09:25:27")
    later = stages(log, second_half)
    assert later["e2e_latency"] == {"n": 1, "p50_ms": 1902, "p95_ms": 1902}
    assert log_size(log) == len(LOG)
    assert stages(tmp_path / "missing.log") == {} and log_size(tmp_path / "none") == 0


def test_the_recognisers_counts_are_summed(tmp_path: Path) -> None:
    log = tmp_path / "voice.log"
    log.write_text(LOG)
    assert recogniser_counts(log) == {"utterances": 3, "at_the_edge": 2, "discarded": 3}
    assert recogniser_counts(log, LOG.index("2026-12-06 09:25:37")) == {
        "utterances": 1, "at_the_edge": 1, "discarded": 0}
    assert recogniser_counts(tmp_path / "missing.log") == {}


def test_the_turn_ends_are_summed_over_the_calls(tmp_path: Path) -> None:
    log = tmp_path / "voice.log"
    log.write_text(LOG)
    assert turn_ends(log) == {"finished": 3, "unfinished": 1}
    assert turn_ends(log, LOG.index("2026-12-06 09:25:38")) == {"finished": 1, "unfinished": 0}


DECODES = """\
2026-12-07 16:27:01,000 INFO    agentia.voice: decode timings (ms): {'batch': 1, 'wait': [0], 'decode': 200}
2026-12-07 16:27:01,100 INFO    agentia.voice: decode timings (ms): {'interim': 1, 'decode': 120}
2026-12-07 16:27:02,000 INFO    agentia.voice: decode timings (ms): {'batch': 2, 'wait': [150, 40], 'decode': 300}
"""  # noqa: E501


def test_the_decodings_wait_and_time_are_summarised_per_utterance(tmp_path: Path) -> None:
    log = tmp_path / "voice.log"
    log.write_text(LOG + DECODES)
    got = decodes(log)
    assert got["wait"] == {"n": 3, "p50_ms": 40, "p95_ms": 150}
    assert got["decode"] == {"n": 3, "p50_ms": 300, "p95_ms": 300}  # a batch's, each of its
    assert got["batches"] == {"1": 1, "2": 1}
    assert got["interim_decode"] == {"n": 1, "p50_ms": 120, "p95_ms": 120}
    assert decodes(log, len(LOG) + DECODES.index("2026-12-07 16:27:02"))["batches"] == {"2": 1}
    assert decodes(log, 0, len(LOG)) == {}  # a tree that does not log them
    assert "alone" not in got  # nor whether they came alone (before session 20)


LONE = """\
2026-12-08 01:27:01,000 INFO    agentia.voice: decode timings (ms): {'batch': 1, 'wait': [0], 'decode': 160, 'others': 0}
2026-12-08 01:27:01,100 INFO    agentia.voice: decode timings (ms): {'batch': 1, 'wait': [0], 'decode': 250, 'others': 1}
2026-12-08 01:27:02,000 INFO    agentia.voice: decode timings (ms): {'batch': 1, 'wait': [0], 'decode': 200, 'others': 0}
"""  # noqa: E501


def test_the_decodings_that_came_when_no_other_ran_or_waited_are_counted(
        tmp_path: Path) -> None:
    log = tmp_path / "voice.log"
    log.write_text(LONE)
    got = decodes(log)
    assert got["alone"] == "2/3"


def test_the_callers_jitter_buffers_are_summarised_for_the_phases_calls(
        tmp_path: Path) -> None:
    log = tmp_path / "voice.log"
    log.write_text(
        "2026-12-07 17:00:01,000 INFO    agentia.voice: caller audio jitter buffer of session "
        "bench-1: {'delay_ms': 40.0, 'target_ms': 30.5, 'minimum_ms': 30.5}\n"
        "2026-12-07 17:00:02,000 INFO    agentia.voice: caller audio jitter buffer of session "
        "bench-2: {'delay_ms': 200.0, 'target_ms': 180.0, 'minimum_ms': 170.0}\n"
        "2026-12-07 17:00:03,000 INFO    agentia.voice: caller audio jitter buffer of session "
        "other: {'delay_ms': 999.0, 'target_ms': 999.0, 'minimum_ms': 999.0}\n")
    got = uplink_jitter(log, {"bench-1", "bench-2"})
    assert got["delay_ms"]["n"] == 2 and got["delay_ms"]["p95_ms"] == 200  # not "other"
    assert got["target_ms"]["n"] == 2 and set(got) == {"delay_ms", "target_ms", "minimum_ms"}
    assert uplink_jitter(log, {"none"}) == {} and uplink_jitter(tmp_path / "x", {"a"}) == {}


def test_a_tree_that_logs_the_jitter_buffers_is_told_apart(tmp_path: Path) -> None:
    log = tmp_path / "voice.log"
    log.write_text(LOG + "x: caller audio jitter buffer of session s: {'delay_ms': 1.0}\n")
    assert logs_uplink(log, len(log.read_bytes())) and not logs_uplink(log, len(LOG))
    assert not logs_uplink(tmp_path / "missing.log", 10)
