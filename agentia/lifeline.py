"""Children that die with their parent.

A child started with ``Popen(preexec_fn=lifeline.tied())`` gets SIGTERM from the kernel when
the process that started it dies, however it dies (SIGKILL included), so a killed
``agentia up`` leaves no Redis, edge or worker running under init. Linux only
(``prctl(PR_SET_PDEATHSIG)``); elsewhere the returned function does nothing and the parent's
own stop is all there is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1
"""From <linux/prctl.h>."""


def _prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()  # looked up in the parent: the forked child must not load libraries


def tied() -> Callable[[], None]:
    """The ``preexec_fn`` that ties a child to this process (call it in the parent)."""
    parent = os.getpid()

    def tie() -> None:  # in the child, between fork and exec: no imports, no locks
        if _PRCTL is None:
            return
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)  # kept across exec
        if os.getppid() != parent:  # the parent died before prctl: nobody would signal us
            os.kill(os.getpid(), signal.SIGTERM)

    return tie
