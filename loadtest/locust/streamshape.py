"""The load shape of the stream scenarios: every StreamUser starts within a second (each paces
its own handshakes, as in the storm) and the run lasts until the runner writes ``stop`` to the
phase file, or ``--ws-max-seconds`` have passed."""

from __future__ import annotations

import math

from locust import LoadTestShape

from loadtest.locust.streamuser import read_phase
from loadtest.locust.wsuser import batch_size


class StreamShape(LoadTestShape):
    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        env = self.runner.environment
        opts = env.parsed_options
        if read_phase(env) == "stop" or self.get_run_time() > opts.ws_max_seconds:
            return None
        users = math.ceil(opts.ws_connections / batch_size(opts))
        return users, float(users)
