"""Pieces of loadtest/bench_turnpath.py: the stack of one checkout, and the clients."""
