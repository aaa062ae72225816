"""livekit-agents' event-loop monitor at a coarser tick: fewer wake-ups in every silent call.

livekit-agents 1.8.9 watches each job's event loop (``livekit.agents.telemetry.loop_monitor``,
started for every call by its job runner): a heartbeat on the call's loop (``call_later``) and
a watchdog thread of its own each wake once a tick, and the tick is a fifth of the warn
threshold (``LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS``, default 100 ms), at least 20 ms: 100
wake-ups a second per call, silent or not, more than the caller's 31 audio frames
(``AGENTIA_VOICE_INPUT_FRAME_MS``, 32 ms). py-spy on a voice worker holding 4 silent calls
(session 17) found the watchdogs' waits in 21 % of its Python samples.

:func:`coarse_tick` makes the warn threshold :data:`WARN_MS` unless the environment sets one:
the monitor then ticks every 50 ms (its slowest) and still reports a call's loop blocked for
250 ms or more (a warning; the error threshold stays 500 ms). Blocks of 100-250 ms are no
longer reported. ``LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS`` set by the operator wins (``0`` turns
the monitor off). Measured in docs/voice.md ("Session 17: what a silent call costs").
"""

from __future__ import annotations

import os

ENV = "LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS"
"""livekit-agents' own variable (read when each job starts its monitor)."""
WARN_MS = "250"
"""The warn threshold at which the monitor's tick reaches its longest, 50 ms (a fifth)."""


def coarse_tick() -> None:
    """Before the first job starts: the monitor's warn threshold ``WARN_MS`` unless set."""
    os.environ.setdefault(ENV, WARN_MS)
