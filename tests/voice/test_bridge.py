"""The bridge on the real bus: Redis, an edge with a chat client, agent workers (demo model)."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from sessions import events as E
from sessions.bus import Bus, Forbidden
from tests.conftest import Client, Cluster
from voice.bridge import VoiceBridge

pytestmark = pytest.mark.e2e


async def log_of(bus: Bus, sid: str) -> list[dict[str, object]]:
    r = await bus.replay(sid, 0, None)
    return [{"offset": o, **orjson.loads(e)} for o, e in r.events]


async def turn_end(bus: Bus, sid: str, timeout: float) -> dict[str, object]:
    """The first event that ends a turn, read from the session log as it is appended."""
    last = b"0-0"
    async with asyncio.timeout(timeout):
        while True:
            rows = await bus.redis.xread({bus.keys.log(sid): last}, block=1000)
            for _stream, entries in rows or []:
                for rid, fields in entries:
                    last = rid
                    event = orjson.loads(fields[b"e"])
                    if event["type"] in ("reply", "cancelled", "turn_error"):
                        return dict(event)


async def test_a_voice_turn_is_a_turn_of_the_session(cluster: Cluster, bus: Bus) -> None:
    edge = cluster.edge()
    cluster.worker()
    sid = f"v-{uuid.uuid4().hex[:8]}"
    chat = await Client.open(edge.port, user="alice", session=sid)
    await chat.until("welcome")
    await chat.send(type="send", id="c-1", text="remember the word banana")
    await chat.until("reply")
    bridge = VoiceBridge(bus, sid, "alice")
    await bridge.start()
    try:
        spoken = [t async for t in bridge.ask("what did i say", "voice-1")]
        user = await chat.until("user", source="voice")
        reply = await chat.until("reply", turn=user["offset"])
        assert user["text"] == "what did i say" and user["user"] == "alice"
        # the same conversation: the agent saw the chat turn before the voice turn
        assert "remember the word banana" in reply["text"]
        assert "".join(spoken) == reply["text"]
        # resending the same client id (a retry) does not make a second turn
        again = [t async for t in bridge.ask("what did i say", "voice-1")]
        assert "".join(again) == reply["text"]
        users = [e for e in await log_of(bus, sid) if e["type"] == "user"]
        assert [(e["source"], e["text"]) for e in users] == [
            ("chat", "remember the word banana"), ("voice", "what did i say")]
    finally:
        await bridge.close()
        await chat.close()
    assert await bus.redis.hexists(bus.keys.nodes(sid), bridge.node) == 0


async def test_barge_in_cancels_the_running_turn(cluster: Cluster, bus: Bus) -> None:
    cluster.worker(agent="tests.agents_fixtures:slow", SLOW_DELAY="0.2")
    sid = f"v-{uuid.uuid4().hex[:8]}"
    bridge = VoiceBridge(bus, sid, "bob")
    await bridge.start()
    try:
        reply = bridge.ask("tell me a story", "voice-1")
        first = await asyncio.wait_for(anext(reply), 15)
        assert first
        await reply.aclose()  # what livekit-agents does to the LLM stream on an interruption
        ended = await turn_end(bus, sid, timeout=10)
        assert ended["type"] == "cancelled"
        assert first in str(ended["text"])
    finally:
        await bridge.close()


async def test_a_turn_closed_while_it_is_submitted_is_cancelled(
        cluster: Cluster, bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    """A preemptive turn the caller spoke on after can be closed while ``Bus.submit`` is
    still awaited: the turn may be stored by then, and must be cancelled all the same (not
    answered in full to chat clients)."""
    cluster.worker(agent="tests.agents_fixtures:slow", SLOW_DELAY="0.2")
    sid = f"v-{uuid.uuid4().hex[:8]}"
    bridge = VoiceBridge(bus, sid, "erin")
    await bridge.start()
    stored = asyncio.Event()
    submit = bus.submit

    async def slow_submit(*args: object, **kw: object) -> object:
        sub = await submit(*args, **kw)  # type: ignore[arg-type]
        stored.set()
        await asyncio.sleep(1.0)  # the answer to the submit is still on its way
        return sub

    monkeypatch.setattr(bus, "submit", slow_submit)
    try:
        reply = bridge.ask("tell me a story", "voice-1")
        asking = asyncio.ensure_future(anext(reply))
        await asyncio.wait_for(stored.wait(), 10)
        asking.cancel()  # livekit-agents closing the stream of a discarded preemptive turn
        with pytest.raises(asyncio.CancelledError):
            await asking
        ended = await turn_end(bus, sid, timeout=15)
        assert ended["type"] == "cancelled"
    finally:
        await bridge.close()


async def test_another_users_session_is_refused(bus: Bus) -> None:
    sid = f"v-{uuid.uuid4().hex[:8]}"
    await bus.open_session(sid, "alice")
    with pytest.raises(Forbidden):
        await VoiceBridge(bus, sid, "mallory").start()


async def test_a_turn_lost_from_the_delivery_stream_is_read_back_from_the_log(
        bus: Bus) -> None:
    """The membership's catch-up (sessions/membership.py): events the bridge's delivery
    stream never carried (here: the node unregistered while they were appended, as when
    its stream's master failed over) are read from the log once the stream is back."""
    sid = f"v-{uuid.uuid4().hex[:8]}"
    bridge = VoiceBridge(bus, sid, "carol")
    await bridge.start()
    try:
        sub = await bus.submit(sid, "voice-1", "hello", user="carol", source="voice")
        spoken: list[str] = []

        async def speak() -> None:
            async for said in bridge.follow(sub.offset):
                spoken.append(said)

        task = asyncio.create_task(speak())
        await asyncio.sleep(0.3)  # following: the log read found nothing yet
        await bus.unregister(sid, bridge.node)
        run = f"{sub.offset}:1:ab"
        await bus.append(sid, E.turn_start(sub.offset, 1), run=run)
        await bus.stream_chunk(sid, run, 1, orjson.dumps(E.chunk(sub.offset, 1, 1, "Hi ")),
                               "Hi ")
        await asyncio.sleep(0.3)
        assert not task.done() and not spoken  # nothing was delivered: still waiting
        bridge.stream_back()  # the log (turn_start), then the partial ("Hi ")
        for _ in range(50):
            if spoken:
                break
            await asyncio.sleep(0.1)
        assert spoken == ["Hi "]
        await bus.append(sid, E.reply(sub.offset, "Hi there."), done=sub.offset)
        bridge.stream_back()
        await asyncio.wait_for(task, 5)
        assert "".join(spoken) == "Hi there." and spoken[0] == "Hi "
    finally:
        await bridge.close()


async def test_a_call_that_joins_mid_reply_reads_the_partial_again_when_behind(
        bus: Bus) -> None:
    """The partial buffer holds every tenth piece's text (sessions/keys.py PARTIAL_EVERY): a
    call that starts following a reply at piece 12 speaks pieces 1-10 from the buffer, skips
    13-19 (11 and 12 it never got), and at piece 20 reads the buffer again: the whole reply
    is spoken, in order, without a gap or a repeat (it stopped at piece 10 before)."""
    sid = f"v-{uuid.uuid4().hex[:8]}"
    bridge = VoiceBridge(bus, sid, "carol")
    await bridge.start()
    words = [f"w{i} " for i in range(1, 22)]
    try:
        sub = await bus.submit(sid, "voice-1", "hello", user="carol", source="voice")
        run = f"{sub.offset}:1:ab"
        await bus.append(sid, E.turn_start(sub.offset, 1), run=run)

        async def piece(seq: int) -> None:
            since = "".join(words[seq - 10:seq]) if seq % 10 == 0 else ""
            await bus.stream_chunk(sid, run, seq, orjson.dumps(
                E.chunk(sub.offset, 1, seq, words[seq - 1])), since)

        for seq in range(1, 13):  # before the call follows the turn
            await piece(seq)
        spoken: list[str] = []

        async def speak() -> None:
            async for said in bridge.follow(sub.offset):
                spoken.append(said)

        task = asyncio.create_task(speak())
        for _ in range(50):
            if spoken:
                break
            await asyncio.sleep(0.1)
        assert "".join(spoken) == "".join(words[:10])
        for seq in range(13, 22):
            await piece(seq)
        for _ in range(50):
            if "".join(spoken) == "".join(words):
                break
            await asyncio.sleep(0.1)
        assert "".join(spoken) == "".join(words)
        await bus.append(sid, E.reply(sub.offset, "".join(words)), done=sub.offset)
        await asyncio.wait_for(task, 5)
        assert "".join(spoken) == "".join(words)
    finally:
        await bridge.close()


async def test_closing_a_call_is_bounded_when_a_task_ignores_its_cancel(
        bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task of the call that does not end on cancel (as a delivery read once did) must not
    hang the call's end: close() gives up on it after CLOSE_WAIT_S and still leaves the bus."""
    import voice.bridge as B
    monkeypatch.setattr(B, "CLOSE_WAIT_S", 0.5)
    sid = f"v-{uuid.uuid4().hex[:8]}"
    bridge = VoiceBridge(bus, sid, "alice")
    await bridge.start()
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # swallows every cancel

    bridge.spawn(stubborn())
    await asyncio.sleep(0)
    t0 = asyncio.get_running_loop().time()
    await asyncio.wait_for(bridge.close(), 10)
    assert asyncio.get_running_loop().time() - t0 < 3
    assert await bus.redis.hexists(bus.keys.nodes(sid), bridge.node) == 0
    release.set()
    await asyncio.sleep(0.05)


async def test_closing_right_after_the_start_ends_every_task(bus: Bus) -> None:
    """The delivery read cancelled while its first XREAD is in flight: redis-py was seen to
    swallow that cancel (the reader went on reading, "cancelling" for ever); the membership's
    stop flag ends it after that read."""
    for pause in (0.0, 0.02, 0.1):
        bridge = VoiceBridge(bus, f"v-{uuid.uuid4().hex[:8]}", "alice")
        await bridge.start()
        await asyncio.sleep(pause)
        tasks = list(bridge._tasks)
        await asyncio.wait_for(bridge.close(), 10)
        assert all(t.done() for t in tasks), [t for t in tasks if not t.done()]
