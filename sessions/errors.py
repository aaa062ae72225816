"""What the bus's roles raise besides :class:`agentia.codes.BusUnavailable`."""

from __future__ import annotations


class Forbidden(Exception):
    """The session belongs to another user."""


class Missing(Exception):
    """The session does not exist and the caller did not ask to create it."""


class LockLost(Exception):
    """This worker no longer holds the session's lock: another worker has taken over."""
