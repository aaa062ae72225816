"""A voice call's span is the parent of the turns it makes (voice/call_trace.py): the bridge
(here, in the test process, tracing into memory) submits inside the call's span, and the real
worker process exports its ``worker.turn`` to an OTLP receiver as a child of that span."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentia import tracing
from launch.redis_server import RedisServer
from sessions.bus import Bus, connect
from tests.conftest import Cluster
from tests.e2e.test_tracing import FAST_EXPORT, Receiver, receiver  # noqa: F401 (fixture)
from voice import call_trace
from voice.bridge import VoiceBridge

pytestmark = pytest.mark.e2e


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, into memory."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    monkeypatch.setattr(tracing, "ON", True)
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    monkeypatch.setattr(tracing, "_provider", provider)
    yield spans


async def test_the_turns_of_a_call_are_children_of_its_span(
        redis_server: RedisServer, prefix: str, bus: Bus, receiver: Receiver,  # noqa: F811
        memory: InMemorySpanExporter) -> None:
    cluster = Cluster(redis_server.url, prefix)
    try:
        cluster.worker(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, **FAST_EXPORT)
        sid = f"v-{uuid.uuid4().hex[:8]}"
        own = Bus(connect(redis_server.url), prefix=prefix, shards=4)
        bridge = VoiceBridge(own, sid, "alice")
        bridge.trace = call_trace.call_span(sid, "alice", "room-1")
        await bridge.start()
        try:
            async with asyncio.timeout(30):
                spoken = [t async for t in bridge.ask("hello there", "voice-1")]
        except TimeoutError:
            log = (await bus.replay(sid, 0, None)).events
            raise AssertionError(f"no reply: log {log}, spans {receiver.spans}") from None
        finally:
            # its bus first: closing the bridge waits for its delivery read, which a cancel
            # did not always end here (seen: > 60 s); a closed pool ends it at once
            await own.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await bridge.close()
        call_trace.end_call(bridge.trace)
        assert "hello there" in "".join(spoken)
        (call,) = [s for s in memory.get_finished_spans() if s.name == "voice.call"]
        deadline = time.monotonic() + 20
        while not receiver.named("worker.turn"):  # it ends last of the worker's
            assert time.monotonic() < deadline, receiver.spans
            await asyncio.sleep(0.1)
        (turn,) = receiver.named("worker.turn")
        ctx = call.get_span_context()
        assert turn["trace"] == f"{ctx.trace_id:032x}"
        assert turn["parent"] == f"{ctx.span_id:016x}"
        assert turn["attrs"]["agentia.source"] == "voice"
    finally:
        cluster.stop()
