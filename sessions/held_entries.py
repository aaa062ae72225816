"""Entries of turns waiting in a session this worker runs, held pending until their turn ends
(issue 13, session 17).

An entry read while the worker runs its session needs no task (sessions/shard_reads.py): the
running loop will see its turn. It used to be acked at once, so a turn waiting behind its
session's running turn was in no figure the edges read: ``lag + pending`` of a shard's group
(``Bus.shard_lags``, what ``AGENTIA_MAX_INBOUND_LAG`` bounds) stayed near 0 while every session
queued up to ``MAX_PENDING_TURNS``, and past capacity only that cap refused: 1,600 turns/s
offered to a stack that ends ~500 were nearly all accepted (31,016 of ~32,000 acked), the acked
turns waited longer and longer (ack p99 17.6 s, 12,741 not ended 15 s after the load). Held
here, such an entry stays in the group's pending list until its turn (or a later one of its
session) has ended, so the shard's figure counts the turns waiting in sessions and the edges
refuse new turns with ``overloaded`` once a shard is that far behind.

An entry is acked exactly as before, only later: when a turn at or after its offset ended, else
when the session leaves this worker (its loop ends: no turn pending, the lock another's, the
lock lost, a stop). Bounded: a session holds at most ``MAX_PENDING_TURNS`` (SUBMIT refuses
more; an entry reclaimed while held is held once). The session's lease keeper claims its held
entries again with the running one's (``keep``, every third of a lease), so they are never
idle a lease and not reclaimed by another worker while their session runs here (each reclaim
a ``START`` answered busy: work for nothing when a worker is already saturated).
"""

from __future__ import annotations

from sessions.entry_acks import EntryAcks
from sessions.roles import Claimed


class HeldEntries:
    """Per session, the entries held until their turns end; acked through ``acks``."""

    def __init__(self, acks: EntryAcks) -> None:
        self.acks = acks
        self.by_session: dict[str, dict[tuple[str, bytes], Claimed]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_session.values())

    def hold(self, claim: Claimed) -> None:
        """Keep ``claim`` pending until its session's turn at its offset has ended."""
        self.by_session.setdefault(claim.session, {})[claim.agent, claim.id] = claim

    def of(self, sid: str) -> list[Claimed]:
        """The entries held for ``sid`` (for the lease keeper to claim again)."""
        return list(self.by_session.get(sid, {}).values())

    def turn_ended(self, sid: str, offset: int) -> None:
        """The session's turn at ``offset`` ended: ack the entries of it and of turns before."""
        held = self.by_session.get(sid)
        if not held:
            return
        for cid, claim in list(held.items()):
            if claim.offset <= offset:
                self.acks.add(claim)
                del held[cid]
        if not held:
            del self.by_session[sid]

    def release(self, sid: str) -> None:
        """The session left this worker: ack every entry held for it (as before issue 13's
        session 17, when each was acked on reading)."""
        for claim in self.by_session.pop(sid, {}).values():
            self.acks.add(claim)
