"""The chat User: one connection sending turns (see :mod:`loadtest.locust.wsuser`)."""

from __future__ import annotations

import contextlib
import math
import random
import time
from typing import Any

import gevent
import gevent.event
import gevent.lock
import orjson
from locust import task
from locust.env import Environment

from loadtest import wsframe
from loadtest.locust.counters import Tally
from loadtest.locust.wsconn import WSConnection, WSError, describe
from loadtest.locust.wsuser import AgentiaWSUser, fire

_TURN_FRAMES = frozenset({"chunk", "partial", "reply", "turn_error", "cancelled"})
"""The frames of a turn it times: reply text (``chunk``, ``partial``: no offset, not log
events) and the turn's ending events."""


class Turn:
    __slots__ = ("cid", "done", "first", "offset", "t0")

    def __init__(self, cid: str) -> None:
        self.cid = cid
        self.t0 = time.perf_counter()
        self.offset: int | None = None
        self.first = False
        self.done = gevent.event.Event()


class ChatUser(AgentiaWSUser):
    """One connection (its own user and session) sending turns at a steady pace."""

    abstract = False

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        users = max(1, int(self.opts.ws_chat_users))
        self.interval = users / max(0.01, float(self.opts.ws_turn_rate))
        turns = int(self.opts.ws_turns)
        self.quota = math.ceil(turns / users) if turns > 0 else -1
        self.conn: WSConnection | None = None
        self.reader: gevent.Greenlet | None = None
        self.turn: Turn | None = None
        self.early: dict[int, list[tuple[str, float, dict[str, Any]]]] = {}
        self.send_lock = gevent.lock.Semaphore()
        self.last_start = 0.0

    def wait_time(self) -> float:
        return max(0.0, self.interval - (time.perf_counter() - self.last_start))

    def on_start(self) -> None:
        gevent.sleep(random.uniform(0, min(self.interval, 2.0)))  # spread the users' phases
        self._connect()

    def _connect(self) -> bool:
        conn = self.connect(f"chat-{self.uid}")
        if conn is None:
            return False
        self.conn = conn
        self.early.clear()
        conn.sock.settimeout(float(self.opts.ws_heartbeat))
        self.reader = gevent.spawn(self._read, conn)
        return True

    def _send(self, frame: dict[str, Any]) -> None:
        assert self.conn is not None
        with self.send_lock:
            self.conn.sock.sendall(wsframe.frame(wsframe.TEXT, orjson.dumps(frame)))

    def _read(self, conn: WSConnection) -> None:
        while True:
            try:
                _, payload = conn.recv()
            except TimeoutError:
                with contextlib.suppress(OSError):
                    self._send({"type": "ping"})
                continue
            except Exception as exc:
                self._closed(conn, describe(exc))
                return
            try:
                frame = orjson.loads(payload)
                self._on_frame(frame, time.perf_counter())
            except Exception as exc:  # a malformed frame is the server's failure, not ours
                fire(self.environment, "frame", time.perf_counter(), exc=exc, ms=0)

    def _closed(self, conn: WSConnection, exc: WSError) -> None:
        if self.conn is conn:
            self.conn = None
            Tally.open -= 1
            Tally.dropped += 1
            fire(self.environment, "drop", time.perf_counter(), exc=exc, ms=0)
            turn = self.turn
            if turn is not None and not turn.done.is_set():
                self._fail(turn, "ack" if turn.offset is None else "full_turn", exc)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _fail(self, turn: Turn, stage: str, exc: BaseException) -> None:
        fire(self.environment, stage, turn.t0, exc=exc)
        Tally.turns_failed += 1
        Tally.turns_done += 1
        turn.done.set()

    def _on_frame(self, f: dict[str, Any], now: float) -> None:
        kind, turn = f.get("type"), self.turn
        if turn is None or turn.done.is_set():
            return
        if kind == "ack" and f.get("id") == turn.cid:
            turn.offset = int(f["offset"])
            fire(self.environment, "ack", turn.t0, ms=(now - turn.t0) * 1000)
            for k, t, ev in self.early.pop(turn.offset, []):
                self._event(turn, k, t, ev)
        elif kind == "error" and f.get("ref") == turn.cid:
            self._fail(turn, "ack", WSError(f"error {f.get('code')}"))
        elif kind in _TURN_FRAMES and "turn" in f:
            if turn.offset is None:  # the ack and the first events may cross
                self.early.setdefault(int(f["turn"]), []).append((kind, now, f))
            elif f["turn"] == turn.offset:
                self._event(turn, kind, now, f)

    def _event(self, turn: Turn, kind: str, now: float, f: dict[str, Any]) -> None:
        if turn.done.is_set():
            return
        if kind in ("chunk", "partial", "reply") and not turn.first:
            turn.first = True  # the first reply text (a partial if it joined mid-turn)
            fire(self.environment, "first_chunk", turn.t0, len(f.get("text", "")),
                 ms=(now - turn.t0) * 1000)
        if kind == "reply":
            fire(self.environment, "full_turn", turn.t0, len(f.get("text", "")),
                 ms=(now - turn.t0) * 1000)
            Tally.turns_done += 1
            turn.done.set()
        elif kind == "turn_error":
            self._fail(turn, "full_turn", WSError(f"turn_error {f.get('code')}"))
        elif kind == "cancelled":
            self._fail(turn, "full_turn", WSError("cancelled"))

    @task
    def chat(self) -> None:
        self.last_start = time.perf_counter()
        over = time.monotonic() - Tally.started_at > float(self.opts.ws_seconds)
        if self.quota == 0 or over:
            gevent.sleep(1.0)  # done sending: keep the connection, the shape stops the run
            return
        if self.conn is None and not self._connect():
            return
        if self.quota > 0:
            self.quota -= 1
        turn = Turn(f"{self.uid}-{self.n}")
        self.n += 1
        self.turn = turn
        Tally.turns_started += 1
        try:
            self._send({"type": "send", "id": turn.cid, "text": self.opts.ws_text})
        except OSError as exc:
            self._fail(turn, "ack", exc)
            return
        if not turn.done.wait(float(self.opts.ws_turn_timeout)):
            self._fail(turn, "ack" if turn.offset is None else "full_turn", WSError("timeout"))

    def on_stop(self) -> None:
        conn, self.conn = self.conn, None
        if self.reader is not None:
            self.reader.kill(block=False)
        if conn is not None:
            Tally.open -= 1
            conn.close(1000)
