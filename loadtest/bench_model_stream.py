"""Worker CPU per streamed token of the model's stream alone, in-process: N concurrent
``stream_response`` calls of one model client against ``loadtest/openai_stub.py`` (its own
process), ``time.process_time`` of this process per token received.

    python -m loadtest.bench_model_stream --clients openai,lean --streams 500 --rounds 2

Clients: ``openai`` (the worker's default: the OpenAI client, one connection pool, the
merging decoder), ``openai16`` (the same over 16 pools taken in turn), ``lean-httpx``
(``AGENTIA_MODEL_CLIENT=lean`` over httpx's transport, 16 pools), ``lean`` (over
``sessions.model_http``), ``lean-tap`` (the same with the direct path's tap: text past the
SDK's handler, sessions/lean_model.py). Each run is a fresh process; runs alternate.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import subprocess
import sys
import time
from typing import Any

import orjson
from agents import ModelSettings
from agents.models.interface import ModelProvider, ModelTracing
from agents.models.openai_provider import OpenAIProvider

from loadtest.record import record

CLIENTS = ("openai", "openai16", "lean-httpx", "lean", "lean-tap")


class _Turns(ModelProvider):
    def __init__(self, providers: list[ModelProvider]) -> None:
        self._turn = itertools.cycle(providers)

    def get_model(self, model_name: str | None) -> Any:
        return next(self._turn).get_model(model_name)


def provider(kind: str, base_url: str, read_ms: int) -> ModelProvider:
    from sessions.lean_model import LeanProvider
    from sessions.runtime import ModelConfig, openai_client
    cfg = ModelConfig(api_key="sk-bench", base_url=base_url, read_every_ms=read_ms)
    if kind == "openai":
        return OpenAIProvider(openai_client=openai_client(cfg), use_responses=False)
    clients = [openai_client(cfg, 2_000 // 16) for _ in range(16)]
    if kind == "openai16":
        return _Turns([OpenAIProvider(openai_client=c, use_responses=False) for c in clients])
    return LeanProvider(clients, read_ms / 1000, wire=kind.startswith("lean") and
                        kind != "lean-httpx")


class _Tap:
    """The direct path's tap (sessions/model_pump.py) reduced to counting: text that skipped
    the SDK's handler, and the caught-up delta after it not counted twice."""

    def __init__(self) -> None:
        self.tokens, self.first, self.skip = 0, 0.0, False

    def text(self, text: str) -> None:
        self.first = self.first or time.monotonic()
        self.tokens += text.count(" ") + (self.tokens == 0)

    def caught_up(self) -> None:
        self.skip = True

    def full(self) -> bool:
        return False

    async def room(self) -> None:
        return None


async def one_stream(p: ModelProvider, start: float, pace: list[float]) -> int:
    model = p.get_model("m")
    tap = _Tap()
    if hasattr(model, "tap") and TAP[0]:
        model.tap = tap
    async for e in model.stream_response(  # type: ignore[call-arg]
            None, "hi", ModelSettings(), [], None, [], ModelTracing.DISABLED):
        if e.type == "response.output_text.delta":
            if tap.skip:
                tap.skip = False
                continue
            tap.first = tap.first or time.monotonic()
            tap.tokens += e.delta.count(" ") + (tap.tokens == 0)
    pace.append(tap.tokens / max(1e-3, time.monotonic() - tap.first))
    return tap.tokens


TAP = [False]


async def run(kind: str, base_url: str, streams: int, read_ms: int) -> dict[str, Any]:
    from sessions import sdk_speedups
    sdk_speedups.install()
    TAP[0] = kind == "lean-tap"
    p = provider(kind, base_url, read_ms)
    await asyncio.gather(*(one_stream(p, 0, []) for _ in range(min(streams, 20))))  # warm
    pace: list[float] = []
    cpu, wall = time.process_time(), time.monotonic()
    got = await asyncio.gather(*(one_stream(p, wall, pace) for _ in range(streams)))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    pace.sort()
    return {"client": kind, "streams": streams, "tokens": sum(got),
            "cpu_us_per_token": round(cpu / sum(got) * 1e6, 2), "cpu_s": round(cpu, 2),
            "wall_s": round(wall, 2), "pace_p50": round(pace[len(pace) // 2], 1)}


def child(a: argparse.Namespace) -> None:
    import uvloop
    uvloop.install()
    print(orjson.dumps(asyncio.run(run(a.child, a.base_url, a.streams, a.read_ms))).decode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="openai,lean")
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--reply-tokens", type=int, default=300)
    ap.add_argument("--tokens-per-s", type=float, default=50.0)
    ap.add_argument("--read-ms", type=int, default=40, help="AGENTIA_MODEL_READ_MS")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--child", choices=CLIENTS, help=argparse.SUPPRESS)
    ap.add_argument("--base-url", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a)
    stub = subprocess.Popen([sys.executable, "-m", "loadtest.openai_stub", "--tokens-per-s",
                             str(a.tokens_per_s), "--reply-tokens", str(a.reply_tokens)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert stub.stdout is not None
        base_url = stub.stdout.readline().split("base_url=")[1].strip()
        runs = []
        for r in range(a.rounds):
            kinds = a.clients.split(",")
            for kind in kinds if r % 2 == 0 else kinds[::-1]:
                out = subprocess.run(
                    [sys.executable, "-m", "loadtest.bench_model_stream", "--child", kind,
                     "--base-url", base_url, "--streams", str(a.streams),
                     "--read-ms", str(a.read_ms)],
                    capture_output=True, text=True, timeout=600, check=True).stdout
                res = {**orjson.loads(out.strip().splitlines()[-1]), "round": r}
                print(orjson.dumps(res).decode(), flush=True)
                runs.append(res)
        if a.record:
            print(record("model-stream", {"runs": runs, "params": vars(a)},
                         notes="in-process stream_response only; CPU of the client process "
                               "per streamed token (the request's fixed part included)"))
    finally:
        stub.terminate()
        stub.wait(10)


if __name__ == "__main__":
    main()
