"""bench_voice's CPU split by process (loadtest/voice_proc.py), without a stack."""

from __future__ import annotations

import os

from loadtest.voice_proc import Sampler, tree, trees


def test_each_role_counts_its_tree_over_the_window_and_the_rest_is_not_the_bench() -> None:
    s = Sampler(0, 0, [], roles={"voice_worker": 1, "redis": 2})
    # pid 3 (a job process) ended during the window: its share is lost; pid 4 started in it
    s.roles0 = {"voice_worker": {1: 1.0, 3: 0.5}, "redis": {2: 2.0}}
    got = s._by_role({"voice_worker": {1: 2.5, 4: 0.3}, "redis": {2: 2.0}}, me=0.7,
                     busy_s=5.0, ours=3.0)
    assert got == {"voice_worker": 1.8, "redis": 0.0, "bench_callers": 0.7,
                   "machine_busy": 5.0, "not_the_bench": 2.0}


def test_trees_reads_proc_once_for_every_root_as_tree_does() -> None:
    got = trees({"me": os.getpid(), "gone": 2**22 + 1})
    assert os.getpid() in got["me"] and set(got["me"]) == set(tree(os.getpid()))
    assert got["gone"] == {}
