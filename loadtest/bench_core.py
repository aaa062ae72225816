"""Core benchmarks of one machine (not Locust; the Locust suite is the scale issue's):

* ``idle``: open N authenticated idle connections to one edge process, measure the edge's
  RSS per connection, CPU-seconds per 1,000 handshakes and handshake latency, hold them with
  heartbeats and count drops.
* ``turns``: a steady rate of chat turns through edge -> Redis -> worker -> edge with the demo
  model at zero delay; ack and full-turn latency percentiles.
* ``cancel``: how long from a client's ``cancel`` to the ``cancelled`` event of a running turn.

Everything runs on loopback, bounded in count and time, and is stopped by PID.

    python -m loadtest.bench_core idle --connections 15000
    python -m loadtest.bench_core turns --rate 100 --seconds 20
    python -m loadtest.bench_core cancel --trials 30

With ``--record`` a run also writes its figures to ``loadtest/results/<name>.json``
(``loadtest.record``), which ``agentia capacity`` reads. Names, and the figures the capacity
model takes from them:

* ``core-idle`` (``idle``; ``core-idle-deflate`` with ``--deflate``):
  ``edge_rss_kib_per_conn``, ``kernel_slab_kib_per_conn_both_ends``, ``edge_cpu_s_per_1000``
  (handshakes), ``edge_cpu_s_per_1000_pings`` (heartbeats of held connections, measured over
  the hold, which must last at least two heartbeats).
* ``core-turns-w<workers>`` (``turns``): per offered rate, CPU-seconds per turn of the edge, of
  the workers and of redis-server (from the first turn sent to the last reply, less what each
  process burns idle, measured for 5 s before), and ``summary``: the same averaged over the
  levels the workers kept up with (every turn answered, first-delta p50 under 1 s: on a shared
  machine the p99 is other people's load), and the highest such rate. With the demo model at
  zero delay a reply is one delta.
* ``core-turns-w<workers>-streamed`` (``turns --word-delay 0.05 --words 100``): the same with
  replies streamed word by word, about one delta per word; and ``...-streamed-fast``
  (``--word-delay 0.01 --record core-turns-w1-streamed-fast``): the same words, several per
  delta. The three runs separate what one more streamed word (a model stream event) and one
  more delta (an append to the log, a frame to the client) cost the edge and the worker.
* ``core-cancel`` (``cancel``): cancel latency (documentation only).

``--record NAME`` overrides the name. The machine these ran on is shared: say so with
``--notes``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from loadtest.core_idle import bench_idle, idle_trees
from loadtest.core_turns import bench_cancel, bench_turns, turns_summary
from loadtest.record import record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("idle")
    i.add_argument("--connections", type=int, default=10_000)
    i.add_argument("--clients", type=int, default=2, help="client processes")
    i.add_argument("--hold", type=float, default=60.0, help="seconds to hold them")
    i.add_argument("--deflate", action="store_true",
                   help="clients offer permessage-deflate and the edge accepts it")
    i.add_argument("--heartbeat", type=float, default=20.0, help="seconds between client pings")
    i.add_argument("--tree", type=Path, action="append",
                   help="a checkout whose edge to measure (repeatable: side by side in one run, "
                        "in turn for --rounds rounds, the order reversed every other round)")
    i.add_argument("--rounds", type=int, default=1)
    i.add_argument("--user-per-connection", action="store_true",
                   help="each connection its own user, per-user limits at their defaults")
    t = sub.add_parser("turns")
    t.add_argument("--rate", type=float, action="append", help="turns/s (repeatable)")
    t.add_argument("--seconds", type=float, default=20.0)
    t.add_argument("--clients", type=int, default=200)
    t.add_argument("--workers", type=int, default=1)
    t.add_argument("--word-delay", type=float, default=0.0,
                   help="demo model: seconds between words (>0: streamed replies, many deltas)")
    t.add_argument("--words", type=int, default=1, help="words in each turn (the reply quotes it)")
    c = sub.add_parser("cancel")
    c.add_argument("--trials", type=int, default=30)
    for sp in (i, t, c):
        sp.add_argument("--record", nargs="?", const="", metavar="NAME",
                        help="write loadtest/results/<NAME>.json (default name: see above)")
        sp.add_argument("--notes", default="", help="recorded with --record (e.g. 'noisy')")
    a = p.parse_args()
    if a.cmd == "idle" and a.tree:
        out: Any = idle_trees(a)
        name, figures = "core-idle-trees", {"runs": out}
    elif a.cmd == "idle":
        out = bench_idle(a.connections, a.clients, a.hold, a.deflate, a.heartbeat,
                         user_per_conn=a.user_per_connection)
        name, figures = "core-idle-deflate" if a.deflate else "core-idle", out
    elif a.cmd == "cancel":
        out = bench_cancel(a.trials)
        name, figures = "core-cancel", out
    else:
        out = bench_turns(a.rate or [100.0], a.seconds, a.clients, a.workers, a.word_delay,
                          a.words)
        name = f"core-turns-w{a.workers}" + ("-streamed" if a.word_delay else "")
        figures = {"levels": out, "summary": turns_summary(out, a.workers),
                   "seconds": a.seconds, "clients": a.clients}
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    if a.record is not None:
        path = record(a.record or name, figures, notes=a.notes)
        print(f"recorded {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
