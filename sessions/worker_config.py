"""A worker's settings (sessions/worker.py; from the environment in sessions/main.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    concurrency: int = 1_000
    lease_ms: int = 30_000
    max_attempts: int = 3
    coalesce_ms: int = 40
    turn_timeout_s: float = 300.0
    """Time a turn may run, not counting its waits for approval."""
    approval_timeout_s: float = 600.0
    """A tool call waiting for approval longer than this is rejected (by ``timeout``)."""
    retry_backoff_s: float = 0.5
    block_ms: int = 1000
    grace_s: float = 10.0
