"""What the lean model's read pacing adds to a reply's first pieces (issue 16), measured at the
socket: the delay from the model server writing a reply's k-th token to the model's stream
giving it (the SDK's ``response.output_text.delta`` that carries it), with the pacing on
(``--read-ms``, the worker's ``AGENTIA_MODEL_READ_MS``) and off, one reply alone and with
``--streams`` replies streaming at once in the same process (the shared pacing tick, and
above ``coalescer.BUSY_STREAMS`` its longer busy window).

The model is ``loadtest/openai_stub.py`` at ``--tokens-per-s``, over the lean model's wire
transport (``sessions/lean_model.py``, the worker's default), all in this process and on one
event loop, so both stamps are the loop's clock and the stub's tick phase drops out (a
closed-loop bench's first text from the submit carries the phase of the last reply's end).
Each probed reply starts after a random pause; the other streams run closed-loop replies.

    python -m loadtest.bench_first_read --read-ms 40 --read-ms 0 --streams 1 --streams 300 \\
        --probes 150 --record v600b-first-read

Per (read_ms, streams): p50/p90/p99 ms of the delay for token 0 (the first piece), 1 and 2
(the rest of a voice call's opening clause).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
from typing import Any

import openai
from agents import ModelSettings
from agents.models.interface import ModelTracing
from openai.types.responses import ResponseTextDeltaEvent

from loadtest.openai_stub import OpenAIStub, _Stream
from loadtest.proc_stats import pct
from loadtest.record import record
from sessions.lean_model import LeanProvider

PROBE = "probe"
TOKENS = 3
"""The tokens of a probed reply whose delay is measured (0: the first piece)."""


class StampedStub(OpenAIStub):
    """The stub, stamping when it writes each of a probed reply's first :data:`TOKENS`."""

    def __init__(self, reply_tokens: int, tokens_per_s: float) -> None:
        self.words = " ".join(f"w{n}" for n in range(reply_tokens))
        super().__init__(self._reply, tokens_per_s)
        self.written: list[float] = []

    def _reply(self, messages: list[dict[str, Any]]) -> str:
        probe = any(m.get("content") == PROBE for m in messages)
        return self.words.replace("w", "p") if probe else self.words

    def _advance(self, s: _Stream) -> bool:
        if s.sent < TOKENS and s.words[0] == "p0":
            self.written.append(asyncio.get_running_loop().time())
        return super()._advance(s)


async def stamped_reply(provider: LeanProvider, prompt: str) -> list[tuple[float, str]]:
    """The text deltas of one reply, stamped as the stream gives them."""
    loop, got = asyncio.get_running_loop(), []
    model = provider.get_model("m")
    async for event in model.stream_response(
            None, prompt, ModelSettings(), [], None, [], ModelTracing.DISABLED,
            previous_response_id=None, conversation_id=None, prompt=None):
        if isinstance(event, ResponseTextDeltaEvent):
            got.append((loop.time(), event.delta))
    return got


def delays(written: list[float], got: list[tuple[float, str]]) -> list[float]:
    """ms from the write of token k to the delta that completes it, k < :data:`TOKENS`."""
    out: list[float] = []
    words = 0
    for at, delta in got:
        words += delta.count("p")
        while len(out) < min(words, len(written)):
            out.append((at - written[len(out)]) * 1000)
    return out


async def _run(read_ms: int, streams: int, a: argparse.Namespace) -> dict[str, Any]:
    stub = StampedStub(a.reply_tokens, a.tokens_per_s)
    await stub.start()
    provider = LeanProvider([openai.AsyncOpenAI(api_key="k", base_url=stub.base_url,
                                                max_retries=0)], read_ms / 1000)
    stop = asyncio.Event()

    async def background() -> None:
        while not stop.is_set():
            await stamped_reply(provider, "hi")

    others = [asyncio.create_task(background()) for _ in range(streams - 1)]
    per_token: list[list[float]] = [[] for _ in range(TOKENS)]
    try:
        await asyncio.sleep(a.warmup)
        for _ in range(3):  # the first reply of a process pays for lazy imports and a connection
            await stamped_reply(provider, PROBE)
        for _ in range(a.probes):
            await asyncio.sleep(random.uniform(0, 0.05))
            stub.written = []
            for k, ms in enumerate(delays(stub.written, await stamped_reply(provider, PROBE))):
                per_token[k].append(ms)
    finally:
        stop.set()
        for task in others:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*others, return_exceptions=True)
        for client in provider.clients:
            await client.close()
        for s in stub.streams:  # the cancelled replies' ends, so the stub's handlers return
            s.writer.close()
            s.done.set()
        await stub.stop()
    return {"read_ms": read_ms, "streams": streams, "probes": a.probes,
            **{f"token{k}_ms_p{p}": round(pct(v, p), 1)
               for k, v in enumerate(per_token) for p in (50, 90, 99)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--read-ms", type=int, action="append", help="repeatable (default 40, 0)")
    ap.add_argument("--streams", type=int, action="append", help="repeatable (default 1)")
    ap.add_argument("--probes", type=int, default=150)
    ap.add_argument("--warmup", type=float, default=2.0, help="s, before the first probe")
    ap.add_argument("--tokens-per-s", type=float, default=50.0)
    ap.add_argument("--reply-tokens", type=int, default=30)
    ap.add_argument("--record", metavar="NAME")
    a = ap.parse_args()
    runs = []
    for streams in a.streams or [1]:
        for read_ms in a.read_ms or [40, 0]:
            runs.append(asyncio.run(_run(read_ms, streams, a)))
            print(runs[-1], flush=True)
    if a.record:
        print(record(a.record, {"runs": runs, "tokens_per_s": a.tokens_per_s,
                                "reply_tokens": a.reply_tokens},
                     notes="shared box (other engineers' runs); one process, one loop"),
              file=sys.stderr)


if __name__ == "__main__":
    main()
