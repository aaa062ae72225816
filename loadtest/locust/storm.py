"""Locustfile: a connection storm. HoldUsers open ``--ws-connections`` authenticated
connections at ``--ws-open-rate`` handshakes/s, hold them idle (heartbeat pings) for
``--ws-hold`` seconds once every handshake is done, then stop.

    locust -f loadtest/locust/storm.py --headless -H ws://127.0.0.1:8765 \\
        --ws-connections 5000 --ws-open-rate 1000 --ws-hold 30 --processes 2 --csv out/locust

``python -m loadtest.locust.run storm`` starts Redis and the gateway, runs this and plots it.
"""

from __future__ import annotations

import math

from locust import LoadTestShape

from loadtest.locust.counters import totals
from loadtest.locust.wsuser import HoldUser, batch_size

__all__ = ["HoldUser", "StormShape"]


class StormShape(LoadTestShape):
    """ramp: all HoldUsers start within a second and pace their own handshakes; hold: starts
    when every handshake has succeeded or failed (or the ramp timed out); then stop."""

    hold_from: float | None = None

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        opts = self.runner.environment.parsed_options
        batch = batch_size(opts)
        users = math.ceil(opts.ws_connections / batch)
        target = users * batch
        t = self.get_run_time()
        if self.hold_from is None:
            planned = target / max(0.1, opts.ws_open_rate)
            timeout = opts.ws_ramp_timeout or 3 * planned + 30
            c = totals(self.runner.environment)
            if c["opened"] + c["failed"] >= target or t > timeout:
                self.hold_from = t
        elif t >= self.hold_from + opts.ws_hold:
            return None
        return users, float(users)
