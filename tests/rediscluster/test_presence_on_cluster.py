"""``presence`` events on a Redis Cluster (this directory's conftest overrides
``redis_server``): the edge's flush runs the PRESENCE script of several sessions (several
slots) in one pipeline, and each one's fan-out reaches the other edge's device."""

from __future__ import annotations

from tests.e2e.test_presence_events import (
    test_a_call_start_and_end_are_written_at_once,
    test_a_second_device_and_an_operator_reach_the_first,
)

__all__ = [
    "test_a_call_start_and_end_are_written_at_once",
    "test_a_second_device_and_an_operator_reach_the_first",
]
