"""What one logical client of the stream scenarios received: pure bookkeeping, no I/O and no
Locust, so the verdict's inputs can be checked on their own. See ``streamuser`` for the
protocol promises these counts are measured against."""

from __future__ import annotations

import zlib
from typing import Any


class Lineage:
    """One logical client of a session and what it received, over its connections."""

    __slots__ = ("conn", "dups", "epoch", "gave_up", "got", "idx", "last", "live", "mismatch",
                 "n", "order", "outcome", "reconnects", "redelivered", "resumed", "resuming",
                 "rid", "session", "slow", "start", "t_attempt", "t_drop", "unrecovered",
                 "user")

    def __init__(self, idx: int, session: str, user: str, slow: bool) -> None:
        self.idx, self.session, self.user, self.slow = idx, session, user, slow
        self.conn: Any = None  # its current connection (a WSConnection), if any
        self.epoch = ""
        self.start = self.last = self.live = -1
        self.got: dict[int, int] = {}
        self.n = self.dups = self.redelivered = self.order = self.mismatch = 0
        self.reconnects = self.resumed = self.unrecovered = 0
        self.resuming = False
        self.gave_up = False
        self.rid = ""
        self.t_attempt = self.t_drop = 0.0
        self.outcome = ""

    def welcome(self, w: dict[str, Any]) -> None:
        if self.start < 0:  # the first connection: the lineage starts at this offset
            self.epoch = str(w["epoch"])
            self.start = self.last = self.live = int(w["offset"])

    def event(self, offset: int, payload: bytes) -> bool:
        """Record one event frame; True when it is a live one (not inside a resume window)."""
        crc = zlib.crc32(payload)
        self.n += 1
        prev = self.got.get(offset)
        if prev is None:
            self.got[offset] = crc
            while self.last + 1 in self.got:
                self.last += 1
        else:
            self.mismatch += prev != crc
            if self.resuming:
                self.redelivered += 1
            else:
                self.dups += 1
        if self.resuming:
            return False
        self.order += offset != self.live + 1
        self.live = max(self.live, offset)
        return True

    def report(self) -> dict[str, Any]:
        return {"i": self.idx, "s": self.session, "slow": self.slow, "epoch": self.epoch,
                "start": self.start, "last": self.last, "n": self.n, "dups": self.dups,
                "redelivered": self.redelivered, "order": self.order,
                "mismatch": self.mismatch, "reconnects": self.reconnects,
                "resumed": self.resumed, "unrecovered": self.unrecovered,
                "connected": self.conn is not None and not self.resuming,
                "gave_up": self.gave_up, "outcome": self.outcome,
                "got": sorted(self.got.items())}
