"""The end of a turn's attempt in the worker (sessions/worker.py): the ending written, the
session lock freed and the inbound entry acked with it when no turn is pending; dead
letters."""

from __future__ import annotations

import logging
from typing import Any

from agents import Agent

from agentia import metrics as M
from agentia import tracing
from agentia.codes import ErrorCode
from sessions import events as E
from sessions import turn_spans as TS
from sessions.coalescer import Coalescer
from sessions.duties import Running
from sessions.roles import Claimed, Turn, WorkerBus
from sessions.turn_log import ending

log = logging.getLogger("agentia.worker")


class TurnEnding:
    """The worker's ending of a turn (a mixin of :class:`sessions.worker.Worker`)."""

    bus: WorkerBus
    name: str
    running: dict[str, Running]
    poked: dict[str, int]

    def agent_for(self, turn: Turn) -> tuple[Agent[Any], frozenset[str]]:
        raise NotImplementedError

    async def _finish(self, turn: Turn, event: dict[str, Any] | list[dict[str, Any]],
                      remember: list[bytes] | None = None, claim: Claimed | None = None,
                      co: Coalescer | None = None) -> None:
        """End the turn with ``event``; ``remember``: its memory items not written yet;
        ``claim``: the inbound entry, acked in the ending's round trip when the ending frees
        the lock (``end_turn``'s ``ack``: after the ending is durable, as before, one round
        trip fewer); ``co``: the turn's text, some of it maybe still waiting for a tick: the
        ending rides that tick when the bus can (``rides_tick``), else it is flushed first."""
        began = tracing.now() if tracing.ON else 0
        run = self.running.get(turn.session)
        paused = run is not None and run.paused
        tick = False
        if co is not None:
            if co.failed is not None:  # an earlier tick lost some of the text: as its flush
                raise co.failed
            tick = self.bus.rides_tick(turn.session)
            if tick:  # no await from here to end_turn handing the ending over
                co.flusher.carry()
            else:
                await co.flush()
        # the ending frees the lock when no turn is pending (one script, not next_turn and
        # release_lock after it); not before a pause record is dropped, which is not fenced
        # (and not acked then either: the entry is acked after end_pause, by the caller)
        if not paused:
            # an entry read before this point names a turn submitted before it, which the
            # ending will find pending (and keep the lock for): only one read from here on
            # makes the loop look again (sessions/worker.py ``_try_session``)
            self.poked.pop(turn.session, None)
        ended = await self.bus.end_turn(
            turn.session, event, turn.offset, self.name, release=not paused,
            remember=remember, ack=claim.ack_command() if claim and not paused else (),
            tick=tick)
        if tracing.ON:
            TS.replied(began, event)
        if run is not None:
            run.ended = ended
        if paused:  # its requests close with it
            await self.bus.end_pause(turn.session)

    async def _dead_letter(self, claim: Claimed, turn: Turn, attempts: int, why: str,
                           code: ErrorCode = ErrorCode.TURN_FAILED,
                           agent: str | None = None, co: Coalescer | None = None) -> None:
        """Dead-letter the turn and end it with a ``turn_error``; ``co``: a timed-out
        attempt's text, some of it maybe still waiting for a tick, which goes before the
        ending (docs/protocol.md: text streamed before a log event reaches every connection
        before it), as for the other endings."""
        await claim.dead_letter(turn, attempts, why)
        log.error("turn %s/%s dead-lettered: %s", turn.session, turn.offset, why)
        await self.bus.rollback_memory(turn.session, turn.offset)
        M.TURNS.labels("dead_lettered").inc()
        if co is not None:  # a tick that lost text (a hole in the chunks) does not stop the
            co.failed = None  # dead letter: a turn_error has no final text (docs/protocol.md)
        await self._finish(turn, ending(turn, E.turn_error(turn.offset, str(code), why),
                                        agent or self.agent_for(turn)[0].name), claim=claim,
                           co=co)
