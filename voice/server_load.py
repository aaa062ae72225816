"""A voice worker's availability counted in calls (``AGENTIA_VOICE_MAX_CALLS``; docs/voice.md
"Limits").

livekit-agents answers each job request by comparing its load plus the calls it has accepted
but not yet started against the threshold. Each of those calls is estimated as the load per
active call, and with no active call as ``threshold / idle processes``: 1.0 with our
``load_threshold`` of 1.0 and one idle process, i.e. full. So a worker with no call refused
every request after the first one that reached it at once (several callers pressing Talk
together, a benchmark's calls that start together) until that one had started: LiveKit then
answered "no workers with sufficient capacity". With a call budget the load is exact:
``(active + accepted) / max calls``.
"""

from __future__ import annotations

from livekit.agents import AgentServer


class CallCountServer(AgentServer):
    """An ``AgentServer`` whose load, with ``calls`` > 0, is its calls over ``calls``."""

    calls = 0
    """The worker's call budget (``AGENTIA_VOICE_MAX_CALLS``); 0: livekit-agents' own rule."""

    def _get_effective_load(self) -> float:  # livekit-agents 1.8.9 (pinned), worker.py
        if not self.calls:
            return super()._get_effective_load()
        return (len(self.active_jobs) + self._reserved_slots) / self.calls
