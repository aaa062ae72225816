"""The agent worker's garbage collector (agentia/collector.py): ``agentia worker`` freezes what
start-up made (the Agents SDK, the clients, the agents) out of every collection and bounds the
young ones, as the edge does. Without it a third of a short turn's worker CPU was the
collector on a saturated box (docs/benchmarks.md, session 15). Checked in a fresh
interpreter, through the worker's own entry point (sessions/main.py ``run``), the event loop
left out."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agentia import collector
from agentia.settings import SettingsError, WorkerSettings, from_env

ENTRY = """
import asyncio, gc, json
from agentia.settings import WorkerSettings, from_env
from sessions import main
asyncio.run = lambda coro: coro.close()  # start-up only: no Redis, no loop
main.run(from_env(WorkerSettings), None)
print(json.dumps([gc.get_freeze_count(), list(gc.get_threshold())]))
"""


def worker_start(**env: str) -> tuple[int, tuple[int, ...]]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENTIA_")}
    out = subprocess.run([sys.executable, "-c", ENTRY], capture_output=True, text=True,
                         check=True, env={**clean, **env}, timeout=60)
    frozen, threshold = json.loads(out.stdout.strip().splitlines()[-1])
    return frozen, tuple(threshold)


def test_the_worker_freezes_its_start_up_and_bounds_young_collections() -> None:
    frozen, threshold = worker_start()
    assert frozen > 50_000  # the SDK, openai, pydantic: ~200,000 objects on 2026-12 versions
    assert threshold == collector.thresholds(25_000, 0)


def test_gen0_zero_keeps_cpythons_thresholds_and_still_freezes() -> None:
    frozen, threshold = worker_start(AGENTIA_WORKER_GC_GEN0_THRESHOLD="0")
    assert frozen > 50_000
    assert threshold == (700, 10, 10)


@pytest.mark.parametrize("var, value", [("WORKER_GC_GEN0_THRESHOLD", "-1"),
                                        ("WORKER_GC_GEN1_THRESHOLD", "1001")])
def test_bad_thresholds_are_refused(monkeypatch: pytest.MonkeyPatch, var: str,
                                    value: str) -> None:
    monkeypatch.setenv(f"AGENTIA_{var}", value)
    with pytest.raises(SettingsError, match="AGENTIA_WORKER_GC_GEN"):
        from_env(WorkerSettings)
