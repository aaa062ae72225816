"""Locustfile: a steady rate of chat turns. ``--ws-chat-users`` ChatUsers (one connection,
user and session each) send ``--ws-turn-rate`` turns/s in all, one turn in flight per
connection, for ``--ws-seconds`` seconds or ``--ws-turns`` turns; the run stops once every
turn sent has its reply (or failed, or timed out).

    locust -f loadtest/locust/chat.py --headless -H ws://127.0.0.1:8765 \\
        --ws-chat-users 50 --ws-turn-rate 20 --ws-seconds 60 --csv out/locust

``python -m loadtest.locust.run chat`` starts Redis, the gateway and agent workers, runs this
and plots it.
"""

from __future__ import annotations

from locust import LoadTestShape

from loadtest.locust.chatuser import ChatUser
from loadtest.locust.counters import totals

__all__ = ["ChatShape", "ChatUser"]


class ChatShape(LoadTestShape):
    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        opts = self.runner.environment.parsed_options
        t = self.get_run_time()
        c = totals(self.runner.environment)
        sending_over = t > opts.ws_seconds + 2 or (
            opts.ws_turns > 0 and c["turns_started"] >= opts.ws_turns)
        if sending_over and c["turns_done"] >= c["turns_started"]:
            return None
        if t > opts.ws_seconds + opts.ws_turn_timeout + 10:
            return None
        return opts.ws_chat_users, float(min(opts.ws_chat_users, 50))
