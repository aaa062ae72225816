"""Request pacing: write requests no faster than the edge accepts them.

The client mirrors the edge's per-connection token bucket (``welcome.limits``) so requests
wait locally instead of being refused with ``rate_limited``, and holds every request back
while the edge has asked it to (``retry_after_ms`` of a retryable error).

The edge charges a frame when it reads it, at some moment between our write and its answer.
The mirror charges it at the answer, the latest that moment can be, so it never holds more
tokens than the edge: charged at the write, a frame that took longer to be read than the next
one (a busy edge or box) let the next one go early and be refused.
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
    tokens: float = 0.0
    stamp: float | None = None
    """None: not used yet (full at the first look, as the edge's)."""

    def _refill(self, now: float) -> None:
        if self.stamp is None:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self, now: float) -> float:
        """Seconds until a token is available (0: now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        # never below 0 (a token short by float rounding, as the edge counts it): the
        # "not used yet" mark was tokens < 0 once, and -1e-16 refilled the bucket to full
        self._refill(now)
        self.tokens = max(0.0, self.tokens - 1.0)

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
        """A request was answered: the edge spent its token by now (when pacing). Requests go
        one at a time, so nothing is written between a request and its answer."""
        if self.enabled:
            self.bucket.take(time.monotonic())

    def hold(self, ms: int, *, rate_limited: bool) -> None:
        """The edge refused a request and asked to wait ``ms``; after ``rate_limited`` its
        bucket is empty, so the mirror is emptied too."""
        now = time.monotonic()
        self.not_before = max(self.not_before, now + ms / 1000 + 0.02)
        if rate_limited:
            self.bucket.empty(now)
