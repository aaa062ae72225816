"""The worker benchmark's in-flight mode (loadtest/bench_worker.py ``--modes inflight``): one
worker against the model stub at a slow pace, each session a closed loop of turns; turns in
flight, the worker's cores and its CPU per streamed token."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from pathlib import Path
from typing import Any

from loadtest.proc_stats import cpu_s, idle_share, machine_ticks, pct
from loadtest.worker_stack import Stack, Tally, deliveries, open_sessions, submit
from sessions.bus import Bus, connect


async def _closed_loop(bus: Bus, tally: Tally, sid: str, until: float) -> None:
    n = 0
    while time.monotonic() < until:
        wake = tally.waiters[sid] = asyncio.Event()
        key = await submit(bus, tally, sid, n)
        n += 1
        while key not in tally.ended:
            await wake.wait()
            wake.clear()


async def _sample(stack: Stack, tally: Tally, stop: asyncio.Event,
                  out: list[tuple[float, float, int, int, int]]) -> None:
    while not stop.is_set():
        out.append((time.monotonic(), stack.worker_cpu(), tally.in_flight(), tally.tokens,
                    tally.streaming()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def run_inflight(stack: Stack, a: argparse.Namespace, streams: int) -> dict[str, Any]:
    assert stack.redis is not None
    bus, tally = Bus(connect(stack.redis.url, 256), prefix="agentia"), Tally()
    stop, stop_sampling = asyncio.Event(), asyncio.Event()
    sessions = [f"fl-{n}" for n in range(streams)]
    samples: list[tuple[float, float, int, int, int]] = []
    # the reader on a pool of its own: 1,000 submitting loops on a starved box kept every
    # connection of the shared pool past its 5 s wait, and the reader's failure ended the run
    reading = Bus(connect(stack.redis.url, 4), prefix="agentia")
    reader = asyncio.create_task(deliveries(reading, tally, stop))
    try:
        await open_sessions(bus, sessions)
        start, stub0 = time.monotonic(), cpu_s(stack.stub.pid) if stack.stub else 0.0
        redis0, bench0 = cpu_s(stack.redis_pid()), time.process_time()
        ticks0 = machine_ticks()
        sampler = asyncio.create_task(_sample(stack, tally, stop_sampling, samples))
        until = start + a.seconds
        loops = [asyncio.create_task(_closed_loop(bus, tally, s, until)) for s in sessions]
        await asyncio.wait(loops, timeout=a.seconds + a.grace)
        stop_sampling.set()
        await sampler
        for t in loops:
            t.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    finally:
        stop.set()
        await reader
        await bus.close()
        await reading.close()
    assert stack.stub is not None
    out = _inflight_figures(tally, samples, until, a.reply_tokens)
    out["streams"] = streams
    wall = time.monotonic() - start
    out["stub_cores"] = round((cpu_s(stack.stub.pid) - stub0) / wall, 3)
    out["redis_cores"] = round((cpu_s(stack.redis_pid()) - redis0) / wall, 3)
    out["bench_cores"] = round((time.process_time() - bench0) / wall, 3)
    out["machine_idle_share"] = idle_share(ticks0, machine_ticks())
    out["worker_peak_rss_mib"] = stack.worker_peak_mib()
    return out


def _inflight_figures(tally: Tally, samples: list[tuple[float, float, int, int, int]],
                      until: float, tokens: int) -> dict[str, Any]:
    most = max((s[2] for s in samples), default=0)
    from_i = next((i for i, s in enumerate(samples) if s[2] >= 0.9 * most), 0)
    steady = [s for s in samples[from_i:] if s[0] <= until]
    if len(steady) < 2:  # in flight peaked at the end of the load: take the grace too
        steady = samples[from_i:]
    cores = ((steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0])
             if len(steady) > 1 else float("nan"))
    # worker CPU per model token while streaming: from the first moment 90 % of the most
    # turns ever streaming at once were streaming (their turns' starts behind them: a starved
    # worker starts 1,000 turns for tens of seconds) to the last sample, the grace included
    # (no turn is submitted then: the streams run out); everything included (the socket, the
    # stream's decoding, the turn's text handling, the pieces' pipelines, the turns that end
    # and start again)
    top = max((s[4] for s in samples), default=0)
    first = next((s[0] for s in samples if top and s[4] >= 0.9 * top), None)
    flowing = [s for s in samples if first is not None and s[0] >= first]
    streamed = flowing[-1][3] - flowing[0][3] if len(flowing) > 1 else 0
    per_token = ((flowing[-1][1] - flowing[0][1]) / streamed * 1e6 if streamed
                 else float("nan"))
    flowing_s = flowing[-1][0] - flowing[0][0] if len(flowing) > 1 else 0.0
    ttfd = [(tally.first[k] - t) * 1000 for k, t in tally.submitted.items() if k in tally.first]
    replies = sum(1 for _, kind in tally.ended.values() if kind == b"reply")
    # the pace each reply reached from its first text to its end, in model tokens per second
    pace = [(tokens - 1) / (end - tally.first[k]) for k, (end, kind) in tally.ended.items()
            if kind == b"reply" and k in tally.first and end > tally.first[k]]
    return {
        "max_in_flight": most,
        "mean_in_flight_steady": round(statistics.fmean(s[2] for s in steady), 1)
        if steady else 0,
        "steady_s": round(steady[-1][0] - steady[0][0], 1) if len(steady) > 1 else 0,
        "worker_cores_steady": round(cores, 3),
        "streaming_most": top, "streaming_s": round(flowing_s, 1),
        "tokens_per_s_streaming": round(streamed / flowing_s) if flowing_s else 0,
        "worker_cores_streaming": round((flowing[-1][1] - flowing[0][1]) / flowing_s, 3)
        if flowing_s else float("nan"),
        "worker_us_per_token_streaming": round(per_token, 2),
        "turns_submitted": len(tally.submitted), "replies": replies,
        "turn_errors": sum(1 for _, kind in tally.ended.values() if kind == b"turn_error"),
        "unfinished": len(tally.submitted) - len(tally.ended),
        "first_text_ms_p50": round(pct(ttfd, 50), 1), "first_text_ms_p99": round(pct(ttfd, 99), 1),
        "text_events_per_reply": round(tally.texts / replies, 1) if replies else 0,
        "reply_tokens_per_s_p50": round(pct(pace, 50), 1),
        "reply_tokens_per_s_p10": round(pct(pace, 10), 1),
    }


def stream_summary(runs: list[dict[str, Any]], tree: Path) -> dict[str, Any]:
    """The last ``--tree``'s worker CPU-s per streamed token while streaming, mean of its runs
    at the most streams: ``agentia capacity`` reads it as the worker's cost per token of an
    OpenAI-compatible model (loadtest/capacity_figures.py, ``worker_token_cpu_stream``)."""
    mine = [r for r in runs if r["tree"] == str(tree)
            and isinstance(r.get("worker_us_per_token_streaming"), int | float)
            and r["worker_us_per_token_streaming"] == r["worker_us_per_token_streaming"]]
    if not mine:
        return {"tree": str(tree)}
    most = max(r["streams"] for r in mine)
    mine = [r for r in mine if r["streams"] == most]
    return {"tree": str(tree), "commit": mine[0]["commit"], "streams": most,
            "worker_cpu_s_per_token": round(statistics.mean(
                r["worker_us_per_token_streaming"] for r in mine) / 1e6, 9)}
