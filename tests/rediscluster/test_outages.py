"""What the bus counts as a Redis outage (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import ClusterDownError, ConnectionError, ResponseError

from sessions.bus import is_down


def raised_in(filename: str) -> AttributeError:
    """An AttributeError whose innermost frame is in ``filename``."""
    ns: dict[str, Any] = {}
    exec(compile("def use(conn):\n    conn.writelines([b'x'])\n", filename, "exec"), ns)
    try:
        ns["use"](None)
    except AttributeError as exc:
        return exc
    raise AssertionError("unreachable")


def test_redis_py_cluster_race_counts_as_an_outage() -> None:
    assert is_down(raised_in("/venv/lib/python3.11/site-packages/redis/asyncio/connection.py"))


def test_our_own_attribute_errors_are_bugs_not_outages() -> None:
    assert not is_down(raised_in("/work/main/sessions/worker.py"))
    assert not is_down(AttributeError("never raised"))


@pytest.mark.parametrize("exc", [ConnectionError("x"), ClusterDownError("x"), OSError("x")])
def test_connection_and_cluster_errors_are_outages(exc: Exception) -> None:
    assert is_down(exc)


def test_a_command_error_is_not_an_outage() -> None:
    assert not is_down(ResponseError("WRONGTYPE"))
