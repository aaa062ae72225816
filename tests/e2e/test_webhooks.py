"""Webhooks (docs/backend.md "Webhooks") against real processes: Redis, an edge, a worker, the
``agentia webhooks`` dispatcher and a real local HTTP receiver (aiohttp) that checks every
signature. A chat turn's events arrive; a receiver that answers 500 and then is down
(connection refused) gets every event once it is back; after N failures an event is a dead
letter; chat turns are not slowed by a receiver that hangs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from sessions import keys as K
from sessions.webhook_outbox import delivery_id
from tests.conftest import Client, Cluster, Proc
from tests.e2e.test_api import get

SECRET = "webhook-test-secret-0123456789"
FAST_RETRY = {"AGENTIA_WEBHOOK_SECRET": SECRET, "AGENTIA_WEBHOOK_RETRY_S": "0.2",
              "AGENTIA_WEBHOOK_RETRY_MAX_S": "1", "AGENTIA_WEBHOOK_TIMEOUT_S": "1"}


class Receiver:
    """A webhook receiver on 127.0.0.1: ``mode`` ok (204), 500, or hang (answers nothing)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.got: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.hits = 0
        self.bad_signatures = 0
        self.port = 0
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def handle(self, req: web.Request) -> web.Response:
        body = await req.read()
        self.hits += 1
        want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(req.headers.get("X-Agentia-Signature", ""), want):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.mode == "500":
            return web.Response(status=500)
        if self.mode == "hang":
            await asyncio.sleep(30)
        self.got.append((dict(req.headers), orjson.loads(body)))
        return web.Response(status=204)

    def unique(self) -> dict[str, dict[str, Any]]:
        """Deliveries deduplicated by X-Agentia-Delivery."""
        return {h["X-Agentia-Delivery"]: b for h, b in self.got}

    async def wait_for(self, n: int, timeout: float = 20) -> None:
        await until(lambda: len(self.unique()) >= n, timeout)


async def until(check: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if check():
                return
            await asyncio.sleep(0.05)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
def plain(redis_server: Any, prefix: str) -> Any:
    """One transport is enough: webhooks do not depend on it."""
    c = Cluster(redis_server.url, prefix)
    yield c
    c.stop()
    assert c.edge_tracebacks() == []


def start(c: Cluster, url: str, **env: str) -> tuple[Proc, Proc]:
    """Edge, worker and dispatcher with webhooks on (every process that appends reads it)."""
    c.env.update({"AGENTIA_WEBHOOK_URL": url, **FAST_RETRY, **env})
    edge = c.edge()
    c.worker()
    hooks = Proc(["webhooks"], c.env, "AGENTIA_WEBHOOKS_READY")
    c.procs.append(hooks)
    return edge, hooks


async def turns(port: int, session: str, n: int, user: str = "alice") -> list[float]:
    """``n`` turns, one after the other; each one's seconds from send to reply."""
    c = await Client.open(port, user=user, session=session)
    await c.until("welcome")
    took = []
    for i in range(n):
        t0 = time.monotonic()
        mid = uuid.uuid4().hex
        await c.send(type="send", id=mid, text=f"hello {i}")
        ack = await c.until("ack", id=mid)
        await c.until("reply", turn=ack["offset"])
        took.append(time.monotonic() - t0)
    await c.close()
    return took


async def test_a_turns_events_arrive_signed(plain: Cluster, receiver: Receiver) -> None:
    edge, _ = start(plain, receiver.url)
    await turns(edge.port, "wh-1", 1)
    await receiver.wait_for(2)
    await asyncio.sleep(0.5)  # nothing else (turn_start, state, chunk: not asked for)
    bodies = sorted(receiver.unique().values(), key=lambda b: int(b["offset"]))
    assert [b["event"]["type"] for b in bodies] == ["user", "reply"]
    assert all(b["session"] == "wh-1" and b["user"] == "alice" for b in bodies)
    assert bodies[0]["offset"] == 1 and bodies[0]["event"]["text"] == "hello 0"
    assert bodies[1]["event"]["turn"] == 1 and "hello 0" in bodies[1]["event"]["text"]
    assert receiver.bad_signatures == 0
    headers = receiver.got[0][0]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Agentia-Attempt"] == "1" and len(headers["X-Agentia-Delivery"]) == 24


async def test_a_receiver_down_for_a_while_gets_everything(plain: Cluster, receiver: Receiver,
                                                           bus: Any) -> None:
    edge, _ = start(plain, receiver.url, AGENTIA_WEBHOOK_MAX_ATTEMPTS="40")
    api = plain.api()
    receiver.mode = "500"
    await turns(edge.port, "wh-down", 2)
    await until(lambda: receiver.hits >= 4, 10)  # both turns' events tried, and refused
    await receiver.stop()  # now down: connection refused
    await turns(edge.port, "wh-down", 2)
    await asyncio.sleep(2)
    assert receiver.got == []
    receiver.mode = "ok"
    await receiver.start()  # back, on the same port
    await receiver.wait_for(8)
    await asyncio.sleep(1)
    # every user and reply event of the log, each exactly once after dedupe
    log = await bus.replay("wh-down", 0, None)
    want = sorted((t, o) for o, e in log.events
                  if (t := orjson.loads(e)["type"]) in ("user", "reply"))
    assert len(want) == 8
    got = sorted((b["event"]["type"], b["offset"]) for b in receiver.unique().values())
    assert got == want
    assert max(int(h["X-Agentia-Attempt"]) for h, _ in receiver.got) > 1
    assert receiver.bad_signatures == 0
    status, text = await get(api, "/metrics")
    assert status == 200
    counts = {line.split('"')[1]: float(line.split()[-1]) for line in text.splitlines()
              if line.startswith("agentia_webhooks_total{")}
    assert counts["delivered"] >= 8 and counts["failed"] >= 4, counts


async def test_after_n_failures_an_event_is_a_dead_letter(plain: Cluster, receiver: Receiver,
                                                          bus: Any) -> None:
    receiver.mode = "500"
    edge, _ = start(plain, receiver.url, AGENTIA_WEBHOOK_MAX_ATTEMPTS="3",
                    AGENTIA_WEBHOOK_EVENTS="user")
    await turns(edge.port, "wh-dead", 1)
    keys, n = bus.keys, 4  # AGENTIA_WEBHOOK_SHARDS' default
    dead: list[Any] = []
    async with asyncio.timeout(15):
        while not dead:
            for k in range(n):
                dead += await bus.redis.xrange(keys.webhook_dead(k, n))
            await asyncio.sleep(0.1)
    assert len(dead) == 1
    fields = {a.decode(): b.decode() for a, b in dead[0][1].items()}
    assert fields["s"] == "wh-dead" and fields["o"] == "1" and fields["n"] == "3"
    assert fields["error"] == "HTTP 500" and orjson.loads(fields["e"])["type"] == "user"
    assert receiver.hits == 3
    for k in range(n):  # nothing left to deliver
        assert await bus.redis.zcard(keys.webhook_retry(k, n)) == 0
        pending = await bus.redis.xpending(keys.outbox(k, n), K.WEBHOOK_GROUP)
        assert pending["pending"] == 0


async def test_turns_are_not_slowed_by_a_receiver_that_hangs(plain: Cluster,
                                                             receiver: Receiver) -> None:
    receiver.mode = "hang"
    edge, _ = start(plain, receiver.url, AGENTIA_WEBHOOK_TIMEOUT_S="10")
    await turns(edge.port, "wh-warm", 1, user="bob")  # imports, first connections
    took = await turns(edge.port, "wh-hang", 5)
    assert receiver.hits >= 2  # the dispatcher is stuck waiting on the receiver
    assert receiver.got == []
    assert max(took) < 2.0, took


async def test_outbox_groups_lost_are_created_again(plain: Cluster, receiver: Receiver,
                                                    bus: Any) -> None:
    """Redis restarted empty (here: the outbox streams deleted): the dispatcher recreates its
    group on NOGROUP and sends what was queued meanwhile."""
    edge, _ = start(plain, receiver.url)
    await turns(edge.port, "wh-nogroup", 1)
    await receiver.wait_for(2)
    n = 4
    await bus.redis.delete(*(bus.keys.outbox(k, n) for k in range(n)))
    await turns(edge.port, "wh-nogroup", 1)
    await receiver.wait_for(4)
    assert receiver.bad_signatures == 0


async def test_an_event_whose_appender_died_before_queueing_it_arrives(
        plain: Cluster, receiver: Receiver, bus: Any) -> None:
    """The worker is killed (SIGKILL, AGENTIA_TEST_FAULT) right after the log append of its
    reply, before the fan-out that would queue it: the dispatcher's sweeper finds the
    session's webhook cursor behind its log and queues the reply from the log, with the
    delivery id the fan-out would have given it."""
    plain.env.update({"AGENTIA_WEBHOOK_URL": receiver.url, **FAST_RETRY,
                      "AGENTIA_WEBHOOK_SWEEP_S": "1"})
    edge = plain.edge()
    doomed = plain.worker(AGENTIA_TEST_FAULT="kill-before-fanout:reply")
    plain.procs.append(Proc(["webhooks"], plain.env, "AGENTIA_WEBHOOKS_READY"))
    c = await Client.open(edge.port, session="wh-kill")
    await c.until("welcome")
    await c.send(type="send", id="m1", text="hello")
    await c.until("ack", id="m1")
    await asyncio.to_thread(doomed.proc.wait, 15)
    assert doomed.proc.returncode == -9  # killed by the fault, not stopped
    log = await bus.replay("wh-kill", 0, None)
    replies = [(o, e) for o, e in log.events if orjson.loads(e)["type"] == "reply"]
    assert len(replies) == 1  # appended, never fanned out (the client got no reply)
    assert not [f for f in c.frames if f.get("type") == "reply"]
    await receiver.wait_for(2)
    got = {b["event"]["type"]: (h, b) for h, b in receiver.got}
    offset, event = replies[0]
    assert got["reply"][1]["offset"] == offset and "hello" in got["reply"][1]["event"]["text"]
    assert got["reply"][0]["X-Agentia-Delivery"] == delivery_id("wh-kill", offset, event)
    assert got["user"][1]["offset"] == 1  # queued by the edge as usual
    meta = await bus.session_meta("wh-kill")
    assert int(meta["wc"]) == int(meta["seq"])  # the sweeper moved the cursor past it
    await c.close()


async def test_webhooks_off_leave_no_cursor_and_no_marks(plain: Cluster, bus: Any) -> None:
    """With AGENTIA_WEBHOOK_URL unset nothing of the outbox is written: no cursor, no mark."""
    edge = plain.edge()
    plain.worker()
    await turns(edge.port, "wh-off", 1)
    assert "wc" not in await bus.session_meta("wh-off")
    assert not [k async for k in bus.redis.scan_iter(match=f"{bus.keys.prefix}:{{wh.*")]
