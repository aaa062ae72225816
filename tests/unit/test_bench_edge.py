"""loadtest.bench_edge's replay of the recogniser's early start, send and cut rule (no
Silero, no clock: windows of probabilities)."""

from __future__ import annotations

from loadtest.bench_edge import Edge, _step

SPEECH, SILENT = 0.99, 0.01


def replay(windows: list[float], early_s: float = 0.03, decode: int = 6) -> Edge:
    """``windows``: each window's own probability (smoothed as the bench's Silero is)."""
    e, p = Edge(), 0.0
    for k, own in enumerate(windows):
        p = 0.35 * p + 0.65 * own
        _step(e, k, p, own, early_s, 0.35, decode)
    return e


def test_a_pause_longer_than_the_decode_and_the_send_silence_cuts_the_sentence() -> None:
    e = replay([SPEECH] * 5 + [SILENT] * 7 + [SPEECH] * 3)
    assert (e.sent_early, e.cuts, e.discarded) == (1, 1, 0)


def test_a_pause_shorter_than_the_decode_discards_the_early_start() -> None:
    e = replay([SPEECH] * 5 + [SILENT] * 4 + [SPEECH] * 3)
    assert (e.sent_early, e.cuts, e.discarded) == (0, 0, 1)


def test_the_second_window_rule_starts_later_and_sends_later() -> None:
    one, two = (replay([SPEECH] * 5 + [SILENT] * 7 + [SPEECH] * 3, early_s=s)
                for s in (0.03, 0.06))
    assert one.cuts == 1 and two.cuts == 0  # its decode was not done before the caller went on
    assert two.discarded == 1
