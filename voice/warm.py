"""What a process's first call would otherwise pay on its own event loop, paid in the prewarm.

Measured in the worker's log of ``tests/browser/test_talk.py``'s first Talk click at load
average 20-35 (the click bounded at 1 s failed at 1.74 s; the agent listened 0.9 s after the
page was in the room, 0.1-0.65 s in later calls): livekit.rtc starts its native runtime (the
FFI library's initialisation) at the first ``Room`` of the process, 0.13 s with the call's loop
blocked, and livekit-agents imports ``llm.async_toolset`` when the first session starts, 0.135 s
blocked (its own warning says to import it at process start). Neither depends on a call.
"""

from __future__ import annotations

import importlib

LAZY_IMPORTS = ("livekit.agents.llm.async_toolset",)
"""Modules livekit-agents imports inside a call's first session start (AgentActivity)."""


def first_call(*, native: bool) -> None:
    """Import :data:`LAZY_IMPORTS` and, with ``native`` (calls are threads of this process:
    the thread executor), start livekit.rtc's native runtime now (a job process of the
    process executor starts its own in its first call: a runtime must not cross a fork)."""
    for name in LAZY_IMPORTS:
        importlib.import_module(name)
    if native:
        from livekit.rtc._ffi_client import FfiClient

        assert FfiClient.instance is not None  # made once per process, kept until exit
