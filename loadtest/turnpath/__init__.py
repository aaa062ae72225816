"""Pieces of loadtest/bench_turnpath.py: the stack of one checkout, the clients, and the
figures of a run."""
