"""loadtest/record.py: what a record says of the code it measured."""

from __future__ import annotations

from pathlib import Path

from loadtest.record import commit, load, record


def test_a_record_of_another_tree_names_that_tree_and_the_bench(tmp_path: Path) -> None:
    record("other", {"x": 1}, results_dir=tmp_path, command="test", measured="0123456789ab")
    doc = load("other", tmp_path)
    assert doc["commit"] == "0123456789ab"  # the code measured, not the bench's checkout
    assert doc["bench_commit"] == commit()


def test_a_record_of_this_checkout_has_its_commit_only(tmp_path: Path) -> None:
    record("own", {"x": 1}, results_dir=tmp_path, command="test")
    doc = load("own", tmp_path)
    assert doc["commit"] == commit() and "bench_commit" not in doc
