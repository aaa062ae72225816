"""The service API's Redis side and two of its end-to-end tests, collected again here so that
they run against the Cluster (this directory's conftest overrides ``redis_server``): the
deletion script's many keys on one slot, the notices to the nodes' delivery streams, the
user's indexes on another slot, presence read across nodes, the takeover's scripts."""

from __future__ import annotations

from tests.e2e.test_backend_api import (
    test_a_posted_message_reaches_every_device_and_the_agent,
    test_deleting_a_session_closes_its_sockets_and_its_running_turn,
)
from tests.e2e.test_takeover import test_takeover_holds_turns_across_restarts_and_gives_back
from tests.integration.test_backend_redis import (
    test_a_posted_message_enters_memory_at_the_next_attempt,
    test_delete_user_finds_sessions_in_both_indexes,
    test_deletion_fences_a_running_turn_and_tells_the_nodes,
    test_presence_lists_devices_of_live_nodes,
    test_takeover_cancels_a_begun_turn_and_holds_the_next,
)

__all__ = [
    "test_a_posted_message_enters_memory_at_the_next_attempt",
    "test_a_posted_message_reaches_every_device_and_the_agent",
    "test_delete_user_finds_sessions_in_both_indexes",
    "test_deleting_a_session_closes_its_sockets_and_its_running_turn",
    "test_deletion_fences_a_running_turn_and_tells_the_nodes",
    "test_presence_lists_devices_of_live_nodes",
    "test_takeover_cancels_a_begun_turn_and_holds_the_next",
    "test_takeover_holds_turns_across_restarts_and_gives_back",
]
