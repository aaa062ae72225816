"""The edge's garbage-collector thresholds (gateway/gcpause.py) bound what one collection walks.
A storm is simulated in a fresh interpreter: long-lived containers allocated the way
connections are, every collection's walk (objects in the generations it collects) counted."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import pytest
from prometheus_client import REGISTRY

from gateway import gcpause

SIMULATE = """
import gc, json, sys
from prometheus_client import REGISTRY

from gateway import gcpause
gen0, gen1, legacy = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
walks = []
def walked(phase, info):
    if phase == "start":
        g = info["generation"]
        walks.append((g, sum(len(gc.get_objects(i)) for i in range(g + 1))))
gcpause.tune(gen0, gen1)
if legacy:
    gc.set_threshold(gen0, 20, 20)  # before issue 13
gc.callbacks.append(walked)
live = [[[], {}] for _ in range(60_000)]  # 180,000 long-lived containers, as in a storm
gc.callbacks.remove(walked)
print(json.dumps(walks))
"""


def storm(gen0: int, gen1: int, legacy: bool = False) -> list[tuple[int, int]]:
    out = subprocess.run([sys.executable, "-c", SIMULATE, str(gen0), str(gen1),
                          "1" if legacy else "0"], capture_output=True, text=True, check=True,
                         timeout=60)
    return [(g, n) for g, n in json.loads(out.stdout)]


@pytest.mark.parametrize("gen1", [0, 2])
def test_young_collections_walk_a_bounded_number_of_objects(gen1: int) -> None:
    walks = storm(2_000, gen1)
    assert sum(g == 1 for g, _ in walks) >= 10, walks  # the storm's survivors went through gen 1
    assert all(g < 2 for g, _ in walks), "a full collection during the storm"
    bound = (gen1 + 2) * 2_000 * 1.25  # the gen-0 list may exceed its count a little
    assert max(n for _, n in walks) <= bound, walks


def test_the_previous_thresholds_walk_the_storm_at_once() -> None:
    """The same storm under 50,000/20/20 scaled down: one gen-1 walk holds 21 young
    generations (the 0.5-0.8 s pause of issue 13 at 18,000 connections)."""
    walks = storm(2_000, 0, legacy=True)
    assert max(n for g, n in walks if g == 1) > 10 * 2_000


def test_full_collections_stay_as_rare_as_before() -> None:
    for gen0, gen1 in ((25_000, 0), (2_000, 0), (50_000, 20), (700, 10)):
        _, _, gen2 = gcpause.thresholds(gen0, gen1)
        assert (gen2 + 1) * (gen1 + 2) * gen0 >= gcpause.FULL_EVERY or gen2 == 10


def observed(generation: str) -> float:
    """Collections of that generation in the histogram so far."""
    value = REGISTRY.get_sample_value("agentia_gc_pause_seconds_count",
                                      {"generation": generation})
    return float(value or 0.0)


def test_pauses_reach_the_histogram_from_the_loop_and_are_bounded() -> None:
    pauses = gcpause.Pauses(limit=2)
    gc.callbacks.append(pauses)
    try:
        for _ in range(3):
            gc.collect()
    finally:
        gc.callbacks.remove(pauses)
    assert [g for g, _ in pauses.pending] == [2, 2] and pauses.dropped == 1
    assert all(p > 0 for _, p in pauses.pending)
    before = observed("2")
    pauses.flush()
    assert pauses.pending == [] and observed("2") == before + 2
