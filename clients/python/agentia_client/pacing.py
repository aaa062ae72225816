"""Request pacing: write requests no faster than the edge accepts them.

The client mirrors the edge's per-connection token bucket (``welcome.limits``) so requests
wait locally instead of being refused with ``rate_limited``, and holds every request back
while the edge has asked it to (``retry_after_ms`` of a retryable error).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from agentia_client.values import Limits


@dataclass(slots=True)
class _Bucket:
    """A mirror of the edge's per-connection token bucket (gateway/protocol.py)."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def _refill(self, now: float) -> None:
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self, now: float) -> float:
        """Seconds until a token is available (0: now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0

    def empty(self, now: float) -> None:
        self._refill(now)
        self.tokens = min(self.tokens, 0.0)



@dataclass(slots=True)
class _Pacer:
    """When the next request may be written: the mirrored bucket (when ``enabled``) and the
    hold-off an edge asked for after a retryable refusal (``not_before``)."""

    enabled: bool
    bucket: _Bucket = field(default_factory=lambda: _Bucket(5.0, 20.0))
    not_before: float = 0.0

    def reset(self, limits: Limits) -> None:
        """A new connection: a full bucket with its limits, and no hold-off."""
        self.bucket = _Bucket(limits.rate_per_s, limits.burst)
        self.not_before = 0.0

    async def gate(self) -> None:
        """Wait until a request may be written."""
        while True:
            now = time.monotonic()
            wait = self.not_before - now
            if self.enabled:
                wait = max(wait, self.bucket.wait(now))
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def take(self) -> None:
        """A request is being written: it spends a token (when pacing)."""
        if self.enabled:
            self.bucket.take(time.monotonic())

    def hold(self, ms: int, *, rate_limited: bool) -> None:
        """The edge refused a request and asked to wait ``ms``; after ``rate_limited`` its
        bucket is empty, so the mirror is emptied too."""
        now = time.monotonic()
        self.not_before = max(self.not_before, now + ms / 1000 + 0.02)
        if rate_limited:
            self.bucket.empty(now)
