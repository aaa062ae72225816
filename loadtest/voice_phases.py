"""bench_voice's phases: the STT alone on each sentence, ``latency`` (sequential calls, one
phrase each) and ``capacity`` (K concurrent calls a level, each level first silent for
``--idle-s``, then speaking), with the voice worker's CPU and memory read over each level."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from livekit import rtc

from loadtest.proc_stats import pct
from loadtest.voice_calls import Bench, Call, jitter_summary, mic_queue_summary, summary
from loadtest.voice_proc import Sampler, idle_jiffies
from loadtest.voice_stages import (
    decodes,
    log_size,
    logs_uplink,
    path,
    stages,
    uplink_jitter,
)
from voice.settings import VoiceSettings
from voice.speech import normalise
from voice.worker import recogniser

MIN_SAMPLES = 8
"""Sentences spoken per capacity level at least (split over its calls)."""
STARTS = ("together", "independent")
"""How a capacity level's callers begin (:class:`Starts`)."""
SPREAD_S = 8.0
"""``independent``: the callers' first sentences spread over this many seconds, about one
phrase-and-answer cycle of the bench (0.5 s of silence, a 1-3 s sentence, ~0.7-1.3 s to the
answer and the answer's ~4-6 s of speech: a 4-call level's two phrases a call took 17-19 s)."""
SEED = 16


async def stt_alone(s: VoiceSettings, speech: list[tuple[str, np.ndarray]],
                    rounds: int = 3) -> dict[str, Any]:
    """The configured STT on each sentence alone (48 kHz in, as from a room): ms each."""
    stt = recogniser(s)
    times, right = [], 0
    for _ in range(rounds):
        for text, pcm in speech:
            frame = rtc.AudioFrame(pcm.tobytes(), 48_000, 1, len(pcm))
            t0 = time.monotonic()
            ev = await stt.recognize(frame)
            times.append((time.monotonic() - t0) * 1000)
            right += normalise(ev.alternatives[0].text) == normalise(text)
    return {"stt": stt.model, "threads": s.voice_stt_threads, "n": len(times),
            "compute_type": getattr(stt, "compute_type", None),
            "p50_ms": round(pct(times, 50)), "p95_ms": round(pct(times, 95)),
            "max_ms": round(max(times)), "right": f"{right}/{len(times)}"}



async def latency(b: Bench, calls: int, deadline: float) -> dict[str, Any]:
    lat, joins, failed, right, turns = [], [], [], 0, 0
    from_queued: list[float] = []
    done: list[Call] = []
    unanswered: set[str] = set()
    answered: set[str] = set()
    misheard: dict[str, str] = {}
    t0, idle0, load0 = time.monotonic(), idle_jiffies(), os.getloadavg()[0]
    for _ in range(calls):
        if time.monotonic() > deadline:
            break
        call = await b.join()
        await b.talk(call, 1)
        await asyncio.sleep(0.3)
        await b.leave(call)
        lat += call.latencies
        from_queued += call.from_queued
        done.append(call)
        if call.error:
            failed.append(call.error)
        else:
            joins.append(call.join_s)
        r, t = await b.heard_right(call)
        right, turns = right + r, turns + t
        for said in call.said:
            (answered if call.latencies else unanswered).add(said)
            if call.heard and call.heard[0] != normalise(said):
                misheard[said] = call.heard[0]
        if call.unanswered:
            failed += call.unanswered
        print(f"  latency call {call.sid}: {[round(x * 1000) for x in call.latencies]} ms "
              f"said {call.said} heard {call.heard} {call.error} {call.unanswered}",
              file=sys.stderr, flush=True)
    # the capacity test speaks only phrases that were answered here (a phrase the VAD never
    # takes for speech would count as a failed call at every level)
    if answered:
        b.speech = [sp for sp in b.speech if sp[0] not in unanswered - answered]
    idle1 = idle_jiffies()
    busy = 1 - (idle1[0] - idle0[0]) / max(1, idle1[1] - idle0[1])
    return {"calls": calls, **summary(lat, from_queued), "failed": len(failed),
            "errors": failed[:8],
            "unanswered_phrases": sorted(unanswered - answered),
            "transcripts_right": f"{right}/{turns}", "misheard": misheard,
            "join_to_listening_p50_s": round(pct(joins, 50), 2) if joins else None,
            "window_s": round(time.monotonic() - t0, 1), "machine_busy_pct": round(100 * busy, 1),
            "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
            "answers": [a for c in done for a in c.answers],
            "sessions": [c.sid for c in done],
            "caller_jitter_buffer_p50": jitter_summary(done),
            "caller_mic_queue": mic_queue_summary(done)}


async def idle_cpu(seconds: float, voice_pid: int, livekit_pid: int,
                   ours: list[int], roles: dict[str, int] | None = None) -> dict[str, Any]:
    """The level's calls joined, every caller silent and the agent listening, for
    ``seconds``: the CPU of the per-frame path alone (the room's audio in, the VAD), no
    transcript or reply."""
    sampler = Sampler(voice_pid, livekit_pid, ours, roles)
    sampler.start()
    await asyncio.sleep(seconds)
    res = await sampler.stop()
    return {k: res[k] for k in ("window_s", "voice_cpu_cores", "livekit_cpu_cores",
                                "bench_client_cpu_cores", "machine_busy_pct",
                                "other_load_cores", "voice_threads_cores",
                                "cpu_s_by_process", "bench_callers_threads_cores") if k in res}

@dataclass(frozen=True)
class Starts:
    """How a capacity level's callers begin: ``modes`` in order, each a level of its own
    (``together``: every caller's first sentence at the same moment, the worst case;
    ``independent``: each caller's first sentence after a delay drawn uniformly from
    [0, ``spread_s``], from ``random.Random(seed * 1000 + k)`` at level ``k``: real callers
    are independent), then each sentence after the agent's answer to the previous."""

    modes: tuple[str, ...] = ("together",)
    spread_s: float = SPREAD_S
    seed: int = SEED

    def delays(self, mode: str, k: int) -> list[float]:
        """Each of ``k`` callers' wait before its first sentence (s)."""
        if mode == "together":
            return [0.0] * k
        rng = random.Random(self.seed * 1000 + k)
        return [round(rng.uniform(0, self.spread_s), 3) for _ in range(k)]


async def capacity(b: Bench, levels: list[int], phrases: int, p95_limit: float,
                   stop_p95: float,
                   voice_pid: int, livekit_pid: int, ours: list[int],
                   deadline: float, log: Path, idle_s: float = 0.0,
                   roles: dict[str, int] | None = None,
                   starts: Starts = Starts()) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    degraded_at = None
    for k in levels:
        stop = False
        for mode in starts.modes:
            delays = starts.delays(mode, k)
            # a level takes about joins + phrases x (speech + answer): stop before the budget
            if time.monotonic() + 20 + max(delays) + phrases * 16 > deadline:
                out.append({"k": k, "starts": mode, "skipped": "time budget"})
                stop = True
                break
            level, lat, failing = await _level(b, k, phrases, voice_pid, livekit_pid, ours,
                                               log, idle_s, roles, delays)
            level = {"k": k, "starts": mode, **({"start_delays_s": delays, "spread_s":
                                                 starts.spread_s, "seed": starts.seed}
                                                if mode != "together" else {}), **level}
            out.append(level)
            p95 = pct(lat, 95) * 1000 if lat else float("inf")
            level["within_limit"] = not failing and p95 <= p95_limit
            print(f"  capacity {orjson.dumps(level).decode()}", file=sys.stderr, flush=True)
            # past the limit, a level more shows the trend; the first mode decides (the
            # worst case when both run: bench_voice's --starts)
            stop = stop or (mode == starts.modes[0] and (failing or p95 > stop_p95))
            # let the calls of this level leave and the pool warm up again
            await asyncio.sleep(2)
        if stop:
            degraded_at = k
            break
    return {"levels": out, "phrases_per_call": phrases, "phrases": [t for t, _ in b.speech],
            "p95_limit_ms": p95_limit, "degraded_at_k": degraded_at,
            "starts": list(starts.modes),
            **{_best_key(m): _best(out, levels, m) for m in starts.modes}}


def _best_key(mode: str) -> str:
    """The capacity's key: the worst case's as before, the independent callers' beside it."""
    return "max_k_p95_within_limit" + ("" if mode == "together" else f"_{mode}")


def _best(out: list[dict[str, Any]], levels: list[int], mode: str) -> int | None:
    """The highest level of ``mode`` under the limit with every level below it under it
    too: the capacity."""
    within = [lv["k"] for lv in out if lv.get("within_limit") and lv.get("starts") == mode]
    return max((k for k in within if all(j in within for j in range(1, k) if j in levels)),
               default=None)


async def _level(b: Bench, k: int, phrases: int, voice_pid: int, livekit_pid: int,
                 ours: list[int], log: Path, idle_s: float,
                 roles: dict[str, int] | None, delays: list[float]
                 ) -> tuple[dict[str, Any], list[float], bool]:
    """One capacity level of ``k`` calls, caller i's first sentence ``delays[i]`` s after the
    level starts: (its figures, its latencies, whether it failed)."""
    calls = list(await asyncio.gather(*(b.join() for _ in range(k))))
    idle = await idle_cpu(idle_s, voice_pid, livekit_pid, ours, roles) if idle_s else None
    sampler = Sampler(voice_pid, livekit_pid, ours, roles)
    sampler.start()
    at = log_size(log)
    per_call = max(phrases, -(-MIN_SAMPLES // k))  # a p95 needs a few samples
    await asyncio.gather(*(_talk_after(b, c, per_call, d)
                           for c, d in zip(calls, delays, strict=True)))
    res = await sampler.stop()
    res["voice_pss_mib_per_call"] = round(res["voice_pss_mib_peak"] / k, 1)
    # the voice worker's CPU for the level's phrases (CPU-s, each phrase and its reply)
    res["voice_cpu_s_per_phrase"] = round(
        res["voice_cpu_cores"] * res["window_s"] / max(1, per_call * k), 2)
    if idle is not None:
        res["idle"] = idle
    res["stages"] = stages(log, at)
    res["decodes"] = decodes(log, at)
    res["path"] = path(log, at, [a for c in calls for a in c.answers])
    res["caller_jitter_buffer_p50"] = jitter_summary(calls)
    res["caller_mic_queue"] = mic_queue_summary(calls)
    await asyncio.gather(*(b.leave(c) for c in calls))
    res["uplink_jitter_buffer"] = await _uplink(log, {c.sid for c in calls if not c.error}, at)
    lat = [x for c in calls for x in c.latencies]
    errors = [c.error for c in calls if c.error]
    unanswered = [u for c in calls for u in c.unanswered]
    heard = await _heard(b, calls)
    queued = [x for c in calls for x in c.from_queued]
    level = {"k": k, **summary(lat, queued), "failed_calls": len(errors), "errors": errors[:5],
             "phrases_spoken": sum(len(c.said) for c in calls),
             "unanswered": len(unanswered), "unanswered_detail": unanswered[:5],
             "overlapped": [o for c in calls for o in c.overlapped], **heard,
             "join_to_listening_max_s": round(max((c.join_s for c in calls), default=0), 2),
             **res}
    # a call fails when it cannot join or a third of its phrases go unanswered
    failing = bool(errors) or len(unanswered) * 3 > sum(len(c.said) for c in calls)
    return level, lat, failing


async def _uplink(log: Path, sessions: set[str], at: int,
                  within_s: float = 15.0) -> dict[str, Any]:
    """The calls' jitter buffers on their callers' audio, each logged when its call ends
    (voice/uplink_stats.py: a few seconds after the caller leaves, on a loaded box): waits
    until every call's is there, at most ``within_s`` (3 s for a tree whose earlier calls
    logged none: one that does not log them)."""
    deadline = time.monotonic() + (within_s if logs_uplink(log, at) else 3.0)
    while True:
        got = uplink_jitter(log, sessions, at)
        if got.get("delay_ms", {}).get("n", 0) >= len(sessions) or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.5)


async def _talk_after(b: Bench, call: Call, phrases: int, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    await b.talk(call, phrases)


async def _heard(b: Bench, calls: list[Call]) -> dict[str, Any]:
    """What the sessions heard of the level's calls: transcripts right, and heard not said."""
    rt = [await b.heard_right(c) for c in calls]
    return {"transcripts_right": f"{sum(r for r, _ in rt)}/{sum(t for _, t in rt)}",
            "heard_not_said": [h for c in calls for h in c.heard
                               if h not in {normalise(x) for x in c.said}][:8]}
