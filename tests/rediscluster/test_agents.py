"""Several agents per deployment on a real Redis Cluster: the same tests, collected again here
(this directory's conftest overrides ``redis_server``). The registry is one key; each agent's
shards have their own hash tags, spread over the masters like the default agent's."""

from __future__ import annotations

from tests.e2e.test_agents import (
    agents_file,
    test_a_worker_runs_only_its_agents_turns,
    test_registry_listing_and_sessions_per_agent,
)
from tests.integration.test_agent_registry import (
    test_a_turn_goes_to_its_sessions_agents_shard,
    test_new_sessions_get_an_agent_and_keep_it,
    test_workers_publish_in_order_and_stale_entries_drop_out,
)

__all__ = [
    "agents_file",
    "test_a_turn_goes_to_its_sessions_agents_shard",
    "test_a_worker_runs_only_its_agents_turns",
    "test_new_sessions_get_an_agent_and_keep_it",
    "test_registry_listing_and_sessions_per_agent",
    "test_workers_publish_in_order_and_stale_entries_drop_out",
]
