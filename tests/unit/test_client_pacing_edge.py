"""The Python SDK's pacing against the edge's own token bucket (gateway/protocol.py): a
property test. Apart from tests/unit/test_client_sdk.py, which runs in an empty venv with the
SDK alone (tests/e2e/test_client_install.py): this one needs the server and hypothesis."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agentia_client import _Bucket
from gateway.protocol import TokenBucket


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 0.5), st.floats(0, 0.5)), min_size=2, max_size=30),
       st.sampled_from([(1.0, 1.0), (5.0, 20.0), (25.0, 2.0)]))
def test_mirror_charged_at_the_answer_never_lets_a_frame_in_early(
        delays: list[tuple[float, float]], limits: tuple[float, float]) -> None:
    """The connection waits on the mirror before a write and charges it at the answer (one
    request at a time); the edge charges when it reads, at any moment in between. Whatever
    the delays, the edge never refuses (charged at the write, a first frame read 0.3 s late
    let the second arrive early: the SDK e2e test's paced burst on a loaded box)."""
    rate, burst = limits
    edge, mirror, now = TokenBucket(rate, burst), _Bucket(rate, burst), 0.0
    for to_read, to_answer in delays:
        now += mirror.wait(now)  # the pacer's gate, then the write
        now += to_read
        assert edge.take(now), "refused: the mirror let the frame go early"
        now += to_answer
        mirror.take(now)
