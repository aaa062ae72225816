"""bench_voice's CPU split by process (loadtest/voice_proc.py), without a stack."""

from __future__ import annotations

import os

from loadtest.voice_proc import Sampler, _top, tree, trees


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


def test_a_thread_that_ends_in_the_window_takes_nothing_from_the_others() -> None:
    # a call's Python thread (40 s so far) ends; another call's starts and takes 1 s: "python"
    # is the 1 s of the threads alive at the end, not 1 - 40 (the sum by name went negative)
    before = {(10, "python"): 40.0, (11, "python"): 2.0, (20, "AudioEncoderQue"): 5.0}
    after = {(11, "python"): 3.0, (12, "python"): 1.0, (20, "AudioEncoderQue"): 6.0}
    assert _top(before, after, 10.0) == {"python": 0.2, "AudioEncoderQue": 0.1}
