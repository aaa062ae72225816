"""The prewarm pays what a process's first call would pay on its loop (voice/warm.py)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

CHECK = """
import os
import sys
from livekit.rtc._ffi_client import FfiClient
from voice import warm
lazy = set(warm.LAZY_IMPORTS)
assert not lazy & set(sys.modules) and FfiClient._instance is None
warm.first_call(native=False)
assert lazy <= set(sys.modules) and FfiClient._instance is None
warm.first_call(native=True)
assert FfiClient._instance is not None
print("ok", flush=True)
# out without the interpreter's teardown: a clean CI run once ended this check with SIGABRT
# from livekit's native runtime ("panic in a function that cannot unwind" in a tokio thread),
# most likely as the teardown stopped it; the worker's own exit is livekit-agents'
os._exit(0)
"""


def test_the_first_calls_imports_and_native_runtime_are_made_ahead() -> None:
    # a fresh interpreter: this one may have imported them already
    done = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (
        done.returncode, done.stdout[-500:], done.stderr[-2000:])
