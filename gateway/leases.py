"""An edge's connections counted against their users' connections over every edge
(``max_connections_per_user_total``, sessions/opening.py): a lease per connection in its
user's set, taken at admission (batched with the handshakes of the moment), renewed while the
connection lives, given back when it ends. An edge that stops renewing (killed) has its
connections expire from the users' counts after CONN_LEASE_S."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from agentia.codes import BusUnavailable
from sessions import keys as K
from sessions.opening import TOO_MANY_CONNECTIONS, Batcher, Refused, UserLimits


class ConnectionLeases:
    """The leases of node ``node_id``'s connections, keyed by connection object."""

    def __init__(self, users: UserLimits, node_id: str, metrics: Counter[str],
                 batch: int) -> None:
        self.users = users
        self.node_id = node_id
        self.metrics = metrics
        self._take_batch = Batcher(users.lease, batch)
        self._give_batch = Batcher(self._give_back_many, batch)
        self._held: dict[object, tuple[str, str]] = {}
        """Connection -> (user, lease id), while it holds a lease."""

    async def take(self, conn: object, user: str) -> bool:
        """Lease a place for ``conn``; False when not limited; raises Refused over the limit."""
        if not self.users.limits.connections:
            return False
        # id() is unique while the connection lives, and it lives until it is given back
        lease = (user, f"{self.node_id}:{id(conn):x}")
        if not await self._take_batch(lease):
            raise Refused(*TOO_MANY_CONNECTIONS)
        self._held[conn] = lease
        return True

    async def give_back(self, conn: object) -> None:
        """Give the connection's lease back (if Redis cannot hear it, the lease expires)."""
        lease = self._held.pop(conn, None)
        if lease is not None:
            with contextlib.suppress(BusUnavailable):
                await self._give_batch(lease)

    async def _give_back_many(self, leases: list[tuple[str, str]]
                              ) -> list[BaseException | None]:
        await self.users.release(leases)
        return [None] * len(leases)

    async def renew(self) -> None:
        """One renewal of every lease held (raises BusUnavailable)."""
        by_user: dict[str, list[str]] = {}
        for user, lease in self._held.values():
            by_user.setdefault(user, []).append(lease)
        await self.users.renew(by_user)

    async def renew_forever(self) -> None:
        if not self.users.limits.connections:
            return
        while True:
            await asyncio.sleep(K.CONN_LEASE_S / 3)
            try:
                await self.renew()
            except BusUnavailable:
                self.metrics["redis_errors"] += 1
