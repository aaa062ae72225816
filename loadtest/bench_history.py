"""A direct turn's input from its session's history, by the number of items of memory: the
Agents SDK's preparation (``prepare_input_with_session``, ``_prepare_turn_input_items``,
``deduplicate_input_items_preferring_latest``, as the direct path used it) against
``sessions/sdk_history.py``'s, in one process, alternated, on the demo's history (a user's
message and the demo's reply per turn, read from JSON as Redis gives them). CPU per turn by
``time.process_time``; issue 13.

    python -m loadtest.bench_history --items 0 --items 50 --items 200 --record
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, cast

import orjson
from agents import RunContextWrapper, Session
from agents.run_internal.items import deduplicate_input_items_preferring_latest
from agents.run_internal.run_loop import _prepare_turn_input_items
from agents.run_internal.session_persistence import prepare_input_with_session

from loadtest.record import record
from sessions import sdk_history, sdk_speedups

USER = {"role": "user", "content": "hello there"}
REPLY = {"id": "msg_demo", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "annotations": [], "logprobs": [],
                      "text": "You said: hello there. I am a demo agent; I can tell time, do "
                              "sums, book tables. (This is the demo model: set "
                              "OPENAI_API_KEY for a real one.)"}]}


class Stored:
    """A session whose reads parse its items from JSON, as the Redis memory's do."""

    session_id = "bench"
    session_settings = None

    def __init__(self, items: int) -> None:
        self.raw = [orjson.dumps(USER if i % 2 == 0 else REPLY) for i in range(items)]

    async def get_items(self, limit: int | None = None) -> list[Any]:
        return [orjson.loads(r) for r in self.raw]

    async def add_items(self, items: list[Any]) -> None:
        pass


async def _sdk(session: Stored, ctx: RunContextWrapper[Any]) -> Any:
    prepared, to_save = await prepare_input_with_session(
        "hello there", cast(Session, session), None, None,
        include_history_in_prepared_input=True, preserve_dropped_new_items=True,
        reasoning_item_id_policy=None, wrapper=ctx)
    return deduplicate_input_items_preferring_latest(
        _prepare_turn_input_items(prepared, [], None)), to_save


async def _one_pass(session: Stored, ctx: RunContextWrapper[Any]) -> Any:
    return await sdk_history.prepare("hello there", session, ctx)


async def measure(items: int, turns: int, rounds: int) -> dict[str, Any]:
    session, ctx = Stored(items), RunContextWrapper[Any](context=None)
    assert await _sdk(session, ctx) == await _one_pass(session, ctx)  # the same input
    us: dict[str, list[float]] = {"sdk": [], "one_pass": []}
    for r in range(rounds):
        order = [("sdk", _sdk), ("one_pass", _one_pass)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            t = time.process_time()
            for _ in range(turns):
                await fn(session, ctx)
            us[name].append(round((time.process_time() - t) / turns * 1e6, 1))
    return {"items": items, "turns": turns, "us_per_turn": us,
            "best_us": {k: min(v) for k, v in us.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, action="append", default=[],
                   help="items of memory (repeatable; default 0, 20, 50, 100, 200)")
    p.add_argument("--turns", type=int, default=300, help="turns per measurement")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--record", nargs="?", const="history", metavar="NAME")
    p.add_argument("--notes", default="")
    a = p.parse_args()
    if not (0 < a.turns <= 10_000 and 0 < a.rounds <= 20
            and all(0 <= n <= 1000 for n in a.items)):
        p.error("--turns 1-10000, --rounds 1-20, --items 0-1000")
    sdk_speedups.install()  # as in a worker
    rows = [asyncio.run(measure(n, a.turns, a.rounds)) for n in a.items or [0, 20, 50, 100, 200]]
    for row in rows:
        print(f"{row['items']:>4} items: SDK {row['best_us']['sdk']:>7} µs, one pass "
              f"{row['best_us']['one_pass']:>6} µs per turn (best of {a.rounds})")
    if a.record is not None:
        print(f"recorded {record(a.record, {'rows': rows}, notes=a.notes)}")


if __name__ == "__main__":
    main()
