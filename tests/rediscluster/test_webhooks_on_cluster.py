"""Webhooks on a Redis Cluster (this directory's conftest overrides ``redis_server``): the
outbox XADD in the fan-out pipeline (another slot than the session's), the dispatcher's
scripts on each outbox shard's slot, XREADGROUP/XAUTOCLAIM per shard; the webhook cursor
(session slot) moved only after the outbox write (another master), the sweeper's marks."""

from __future__ import annotations

from tests.e2e.test_webhooks import (
    plain,
    receiver,
    test_a_receiver_down_for_a_while_gets_everything,
    test_a_turns_events_arrive_signed,
    test_after_n_failures_an_event_is_a_dead_letter,
    test_an_event_whose_appender_died_before_queueing_it_arrives,
)

__all__ = [
    "plain",
    "receiver",
    "test_a_receiver_down_for_a_while_gets_everything",
    "test_a_turns_events_arrive_signed",
    "test_after_n_failures_an_event_is_a_dead_letter",
    "test_an_event_whose_appender_died_before_queueing_it_arrives",
]
