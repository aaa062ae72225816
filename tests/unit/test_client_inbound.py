"""agentia_client/inbound.py: what each frame from the edge does to the client, fed by hand
(no socket; the connection is a stand-in)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from websockets.asyncio.client import ClientConnection

from agentia_client import AgentiaClient, ConnectionLost, Limits, Reset
from agentia_client.core import _Conn
from agentia_client.pending import _Request


def client(**kw: Any) -> AgentiaClient:
    return AgentiaClient("ws://127.0.0.1:1/v1/ws", "token", "s1", **kw)


def conn() -> _Conn:
    return _Conn(cast(ClientConnection, None), "ws://edge", "n1", Limits(), 0.0, 0.0)


WELCOME = {"type": "welcome", "session": "s1", "epoch": "e1", "offset": 3, "agent": "demo"}


async def test_a_welcome_starts_live_then_a_reconnect_asks_to_resume() -> None:
    c, a = client(), conn()
    c._on_welcome(a, WELCOME)
    assert c.connected and c.epoch == "e1" and c.offset == 3 and c.agent == "demo"
    assert c.stats["connections"] == 1 and not c._tracker.need_resume
    c._on_frame(a, {"type": "reply", "offset": 4, "turn": 4, "text": "x"})
    assert c.offset == 4 and c.stats["events"] == 1
    c._on_disconnect(a)
    assert not c.connected
    c._on_welcome(conn(), {**WELCOME, "offset": 9})  # the log grew while away
    assert c.stats["reconnects"] == 1 and c._tracker.need_resume


async def test_frames_go_to_the_tracker_or_answer_the_request_in_flight() -> None:
    c, a = client(stream_text=True), conn()
    c._on_welcome(a, WELCOME)
    c._on_frame(a, {"type": "chunk", "turn": 4, "attempt": 1, "seq": 1, "text": "he"})
    c._on_frame(a, {"type": "transcript", "final": False, "text": "hel"})
    c._on_frame(a, {"type": "something_new", "x": 1})  # unknown: ignored
    c._on_frame(a, {"type": "ack", "id": "nobody", "offset": 5})
    assert (c.stats["stream_frames"], c.stats["captions"], c.stats["unexpected_ack"]) == (1, 1, 1)
    a.outstanding = _Request("send", id="m1", text="hi")
    a.answer = asyncio.get_running_loop().create_future()
    c._on_frame(a, {"type": "ack", "id": "m1", "offset": 5})
    assert a.answer.result() == {"type": "ack", "id": "m1", "offset": 5}


async def test_an_unrequested_unrecovered_resumed_is_a_reset() -> None:
    c, a = client(), conn()
    c._on_welcome(a, WELCOME)
    c._on_frame(a, {"type": "resumed", "recovered": False, "offset": 0, "epoch": "e2"})
    assert c.stats["resets"] == 1 and isinstance(await c.next_event(), Reset)
    c._on_frame(a, {"type": "resumed", "recovered": True, "offset": 0, "epoch": "e2"})
    assert c.stats["resets"] == 1  # a recovered one nobody asked for changes nothing


async def test_a_cancel_in_flight_fails_when_the_connection_drops() -> None:
    c, a = client(), conn()
    c._on_welcome(a, WELCOME)
    loop = asyncio.get_running_loop()
    a.outstanding = _Request("cancel", loop.create_future(), turn=4)
    a.answer = loop.create_future()
    c._on_disconnect(a)
    assert a.answer.cancelled()
    assert a.outstanding.future is not None
    with pytest.raises(ConnectionLost):
        a.outstanding.future.result()
