"""The per-user limits (sessions/opening.py) on a real Redis Cluster: the same tests, collected
again here (this directory's conftest overrides ``redis_server``). Each script touches one
user's slot; a batch of several users runs one call each (their slots differ)."""

from __future__ import annotations

from tests.e2e.test_user_limits import (
    test_connections_per_user_are_capped_over_two_edges,
    test_new_sessions_per_hour_are_refused_with_4502,
)
from tests.integration.test_opening import (
    test_a_session_gets_the_short_ttl_until_its_first_turn,
    test_an_edge_node_leases_renews_and_releases,
    test_connections_are_capped_per_user_over_all_edges,
    test_new_sessions_per_hour_then_live_sessions,
    test_open_sessions_batch_reports_missing_per_session,
    test_renew_extends_and_restores_leases,
    users,
)

__all__ = [
    "test_a_session_gets_the_short_ttl_until_its_first_turn",
    "test_an_edge_node_leases_renews_and_releases",
    "test_connections_are_capped_per_user_over_all_edges",
    "test_connections_per_user_are_capped_over_two_edges",
    "test_new_sessions_per_hour_are_refused_with_4502",
    "test_new_sessions_per_hour_then_live_sessions",
    "test_open_sessions_batch_reports_missing_per_session",
    "test_renew_extends_and_restores_leases",
    "users",
]
