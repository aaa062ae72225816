"""The Dapr tests wait for the daprd build that ``./dev test`` started in the background.

``./dev test`` (need_dapr) builds daprd while ruff, mypy and the rest of the suite run, and sets
``AGENTIA_DAPRD_BUILD_RC`` to the file the build writes its exit status to when it ends;
tests/conftest.py orders this directory last so the ~13-minute cold build overlaps the suite.
Without that variable (daprd current, or pytest run by hand) nothing waits. The wait is bounded
by ``AGENTIA_DAPRD_BUILD_WAIT_S`` (default 1,500 s); past it, or when the build failed, the
tests fail in CI (``CI`` set) and skip elsewhere, naming the build log. docs/development.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

WAIT_S = float(os.environ.get("AGENTIA_DAPRD_BUILD_WAIT_S", "1500"))
POLL_S = 2.0


def _give_up(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


def wait_for_build(rc_file: Path, wait_s: float, poll_s: float = POLL_S) -> int | None:
    """The build's exit status once ``rc_file`` exists, or None after ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while not rc_file.exists():
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll_s)
    return int(rc_file.read_text().strip() or "1")


@pytest.fixture(scope="session", autouse=True)
def daprd_build_done() -> Iterator[None]:
    """Blocks the first Dapr test until the background daprd build has ended (bounded)."""
    rc_path = os.environ.get("AGENTIA_DAPRD_BUILD_RC")
    if rc_path:
        rc_file = Path(rc_path)
        log = rc_file.parent / "daprd-build.log"
        rc = wait_for_build(rc_file, WAIT_S)
        if rc is None:
            _give_up(f"the background daprd build did not end within {WAIT_S:.0f} s "
                     f"(AGENTIA_DAPRD_BUILD_WAIT_S; its log: {log})")
        elif rc != 0:
            _give_up(f"the background daprd build failed with exit status {rc} (log: {log})")
    yield
