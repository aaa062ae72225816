"""What a run of the Locust suite will do, from its command line (``loadtest.locust.run``).

No processes: :func:`plan` turns a scenario's arguments into the suite's Locust options, the
Locust processes to use, how long Locust may run and what ``meta.json`` records about the
run's shape; :func:`environment` is the environment of the gateway and workers.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.locust.driver import stream_meta, stream_seconds

MAX_SOCKETS_PER_LOCUST_PROCESS = 15_000
CONNECTION_SCENARIOS = ("storm", "reconnect", "slow")
"""The scenarios that open ``--connections`` in batches (the others: ``chat``)."""
STREAM_SCENARIOS = ("reconnect", "slow")


@dataclass
class Plan:
    extra: list[str]
    """The suite's Locust options (``--ws-...``) and ``--locust-args``."""
    processes: int
    """Locust worker processes."""
    timeout: float
    """Seconds Locust may run before it is stopped."""
    target: int = 0
    """Connections opened (a whole number of batches); 0 for chat."""
    meta: dict[str, Any] = field(default_factory=dict)
    """What ``meta.json`` records about the run's shape."""


def plan(a: argparse.Namespace, out: Path) -> Plan:
    """The run of scenario ``a.scenario``; a stream scenario also gets its
    ``a.session_prefix`` (new sessions each run, read back by the driver)."""
    p = _connections(a) if a.scenario in CONNECTION_SCENARIOS else _chat(a)
    if a.scenario == "storm":
        p.meta["hold_s"] = a.hold
        p.extra += ["--ws-hold", str(a.hold)]
        p.timeout += a.hold
    elif a.scenario in STREAM_SCENARIOS:
        a.session_prefix = f"{a.scenario}-{os.urandom(3).hex()}"
        p.timeout += stream_seconds(a)
        p.meta.update(stream_meta(a))
        p.extra += ["--ws-control", str(out), "--ws-sessions", str(a.sessions),
                    "--ws-session-prefix", a.session_prefix, "--ws-reconnect-jitter",
                    str(a.jitter), "--ws-max-seconds", str(p.timeout),
                    "--ws-slow-fraction", str(getattr(a, "slow_fraction", 0.0)),
                    "--ws-slow-rcvbuf", str(getattr(a, "slow_rcvbuf", 4096))]
    p.extra += shlex.split(a.locust_args)
    return p


def _connections(a: argparse.Namespace) -> Plan:
    """Batches of equal size (``--batch`` at most) that add up to about ``--connections``;
    one Locust process per 10,000 connections unless told."""
    batch = math.ceil(a.connections / math.ceil(a.connections / a.batch))
    target = math.ceil(a.connections / batch) * batch
    processes = a.locust_processes or max(1, math.ceil(target / 10_000))
    if target / processes > MAX_SOCKETS_PER_LOCUST_PROCESS:
        raise SystemExit(f"{target} connections over {processes} Locust processes is more "
                         f"than {MAX_SOCKETS_PER_LOCUST_PROCESS} each: add processes")
    extra = ["--ws-connections", str(a.connections), "--ws-batch", str(a.batch),
             "--ws-open-rate", str(a.rate), "--ws-heartbeat", str(a.heartbeat),
             "--ws-inflight", str(a.inflight)]
    meta = {"target": target, "batch": batch, "open_rate": a.rate,
            "locust_processes": processes, "heartbeat_s": a.heartbeat}
    return Plan(extra, processes, 3 * target / a.rate + 30 + 120, target, meta)


def _chat(a: argparse.Namespace) -> Plan:
    processes = a.locust_processes or 1
    extra = ["--ws-chat-users", str(a.users), "--ws-turn-rate", str(a.rate),
             "--ws-seconds", str(a.seconds), "--ws-turns", str(a.turns),
             "--ws-turn-timeout", str(a.turn_timeout), "--ws-heartbeat", str(a.heartbeat)]
    meta = {"users": a.users, "turn_rate": a.rate, "seconds": a.seconds, "turns": a.turns,
            "workers": a.workers, "word_delay_s": a.word_delay, "locust_processes": processes}
    return Plan(extra, processes, a.seconds + a.turn_timeout + 120, 0, meta)


def environment(a: argparse.Namespace, base: Mapping[str, str]) -> dict[str, str]:
    """The gateway's and workers' environment: ``base`` with the offline demo model, quiet
    logs, a short drain and ``--env`` on top."""
    # AGENTIA_DEV: the Locust users mint with AGENTIA_JWT_SECRET or the public dev secret
    env = {**base, "AGENTIA_DEV": "true", "AGENTIA_LOG_LEVEL": "warning",
           "AGENTIA_DRAIN_S": "2",
           "PYTHONUNBUFFERED": "1", "AGENTIA_DEMO_WORD_DELAY": str(a.word_delay)}
    env.pop("OPENAI_API_KEY", None)  # the offline demo model, always
    env.update(kv.split("=", 1) for kv in a.env)
    return env
