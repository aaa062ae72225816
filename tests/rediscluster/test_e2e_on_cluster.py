"""End-to-end tests from tests/e2e, collected again here so that they run against the Cluster
(this directory's conftest overrides ``redis_server``): edges and workers are real processes
given the ``redis+cluster://`` URL. A subset that crosses every Cluster-sensitive path (kept
small for CI time): turns, tools and memory, many sessions over every shard, cancel
(pub/sub), a killed worker (XAUTOCLAIM), dead letters, the control plane."""

from __future__ import annotations

from tests.e2e.test_api import test_probes_follow_the_system
from tests.e2e.test_every_turn_completes import (
    test_back_to_back_turns_on_many_sessions_all_complete,
)
from tests.e2e.test_resilience import (
    test_always_failing_turn_is_dead_lettered,
    test_cancel_stops_a_running_turn,
    test_killed_worker_turn_is_finished_by_another,
)
from tests.e2e.test_turns import test_tool_call_and_memory

__all__ = [
    "test_always_failing_turn_is_dead_lettered",
    "test_back_to_back_turns_on_many_sessions_all_complete",
    "test_cancel_stops_a_running_turn",
    "test_killed_worker_turn_is_finished_by_another",
    "test_probes_follow_the_system",
    "test_tool_call_and_memory",
]
