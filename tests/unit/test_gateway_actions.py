"""gateway/actions.py: the values the per-connection state machine returns, loop-free."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import FrozenInstanceError

import pytest

from agentia.codes import CloseCode
from gateway import actions as A
from gateway import session_protocol as S


def test_the_actions_load_without_a_loop_a_socket_or_the_bus() -> None:
    code = ("import sys, gateway.actions; print(sorted(m for m in sys.modules if "
            "m.split('.')[0] in ('asyncio', 'socket', 'redis', 'sessions', 'websockets', "
            "'picows')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_the_state_machine_still_exports_the_actions_it_returns() -> None:
    for name in ("Write", "Close", "Submit", "CancelTurn", "ApproveCall", "Replay",
                 "ReadPartial", "ReadLog", "FILL", "READ_PARTIAL", "Action"):
        assert getattr(S, name) is getattr(A, name), name


def test_actions_are_frozen_values() -> None:
    close = A.Close(CloseCode.SLOW, "slow")
    assert close == A.Close(CloseCode.SLOW, "slow")
    with pytest.raises(FrozenInstanceError):
        close.reason = "other"  # type: ignore[misc]
    assert A.Write(b"x") == A.Write(b"x", paced=False) != A.Write(b"x", paced=True)
    assert A.Replay() == A.FILL and A.FILL.frame is None
