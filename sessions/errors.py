"""What the bus's roles raise besides :class:`agentia.codes.BusUnavailable`."""

from __future__ import annotations


class Forbidden(Exception):
    """The session belongs to another user."""


class Missing(Exception):
    """The session does not exist and the caller did not ask to create it."""


class LockLost(Exception):
    """This worker no longer holds the session's lock: another worker has taken over."""


class UnknownAgent(Exception):
    """A new session asked for an agent that is not registered (close 4504)."""

    def __init__(self, agent: str) -> None:
        super().__init__(f"no such agent: {agent}")
        self.agent = agent


class AgentMismatch(Exception):
    """The session exists with another agent than the one asked for (close 4505)."""

    def __init__(self, agent: str) -> None:
        super().__init__(f"this session talks to agent {agent}")
        self.agent = agent
