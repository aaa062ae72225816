"""bench_voice's calls: one caller (:class:`voice.caller.Caller`) per call, joined the control
plane's way, speaking its phrases and timing end of speech -> first loud agent frame; what the
session heard; the caller's jitter buffer; a list of latencies summarised."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from livekit import rtc

from loadtest.proc_stats import pct
from sessions.bus import Bus
from voice.caller import Caller
from voice.routes import open_call
from voice.settings import VoiceSettings
from voice.speech import normalise
from voice.uplink_stats import jitter_buffer as jitter_buffer  # bench_uplink reads it here too

MIN_ANSWER_S = 0.2
"""An agent sound sooner than this after the caller's speech ended cannot answer it (the
shortest end of turn, 0.1 s of silence, plus a transcription): it is ignored."""


@dataclass
class Call:
    sid: str
    caller: Caller | None = None
    join_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    """End of speech (the caller's last speech sample played out of its microphone's source:
    :attr:`voice.caller.Caller.sound_ended_at`) -> first loud agent frame heard, seconds."""
    from_queued: list[float] = field(default_factory=list)
    """The same answers timed from the last speech frame *queued* (``spoken_at``): the bench's
    end of speech until session 17, kept so that older records stay comparable."""
    said: list[str] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)
    """The voice turns' transcripts in the session's log."""
    unanswered: list[str] = field(default_factory=list)
    overlapped: list[str] = field(default_factory=list)
    error: str = ""
    answers: list[tuple[str, float, float]] = field(default_factory=list)
    """(session, end of speech, first loud frame heard), wall clock: :func:`path`'s input."""
    jitter: dict[str, float] = field(default_factory=dict)
    mic_queue: list[float] = field(default_factory=list)
    """Audio (s) still in the caller's microphone queue at each end of speech: the measuring
    caller's own share of the uplink stage (loadtest/bench_uplink.py)."""


class Bench:
    def __init__(self, s: VoiceSettings, bus: Bus, speech: list[tuple[str, np.ndarray]],
                 join_timeout: float, answer_timeout: float) -> None:
        self.s, self.bus, self.speech = s, bus, speech
        self.join_timeout, self.answer_timeout = join_timeout, answer_timeout
        self.run = uuid.uuid4().hex[:6]
        self.n = itertools.count()
        self.phrase_i = itertools.count()

    async def join(self) -> Call:
        """A fresh call the control plane's way, joined until the agent listens to us."""
        n = next(self.n)
        call = Call(sid=f"bench-voice-{self.run}-{n}")
        t0 = time.monotonic()
        try:
            c = await open_call(self.bus, self.s, f"bench-caller-{n}", call.sid)
            call.caller = await Caller.join(c.url, c.token)
            call.caller.open_microphone()
            await asyncio.wait_for(call.caller.mic_subscribed.wait(), self.join_timeout)
            await call.caller.wait_listening(self.join_timeout)
            call.join_s = time.monotonic() - t0
        except Exception as exc:  # a failed call is a result
            call.error = f"join: {type(exc).__name__}: {exc}"
        return call

    async def talk(self, call: Call, phrases: int) -> None:
        """Speak ``phrases`` phrases, each after half a second of silence once the agent
        listens; record end of speech -> first loud agent frame."""
        caller = call.caller
        if caller is None or call.error:
            return
        try:
            answered_at: float | None = None
            for i in range(phrases):
                if i and answered_at is not None:
                    await caller.wait_answered(answered_at, self.answer_timeout + 40)
                elif i:
                    await caller.wait_listening(self.answer_timeout + 40, quiet_s=1.0)
                await asyncio.sleep(0.5)
                text, pcm = self.speech[next(self.phrase_i) % len(self.speech)]
                call.said.append(text)
                queued_at = await caller.say(pcm)
                spoken = caller.sound_ended_at  # the speech ends when its sound ends
                call.mic_queue.append(caller.source.queued_duration)
                answered_at = None
                try:
                    await asyncio.wait_for(caller.heard_agent.wait(), self.answer_timeout)
                except TimeoutError:  # no answer: noted, the call goes on
                    seen = [st for at, st in caller.states if at > spoken]
                    call.unanswered.append(f"{text!r} (agent states after it: {seen})")
                    continue
                answered_at = spoken
                took = caller.first_loud_after(spoken) - spoken
                if took < MIN_ANSWER_S:
                    # faster than any end of turn: the tail of the previous answer, not an
                    # answer to this phrase (not a latency)
                    call.overlapped.append(f"{text!r} {took * 1000:.0f} ms")
                    continue
                call.latencies.append(took)
                call.from_queued.append(took + spoken - queued_at)
                wall = time.time() - time.monotonic()
                call.answers.append((call.sid, spoken + wall, spoken + took + wall))
            call.jitter = await receive_buffer(caller)
        except Exception as exc:
            call.error = (f"talk (phrase {len(call.latencies) + 1} {call.said[-1]!r}): "
                          f"{type(exc).__name__}: {exc}")

    async def leave(self, call: Call) -> None:
        if call.caller is not None:
            with contextlib.suppress(Exception):
                await call.caller.leave()

    async def heard_right(self, call: Call) -> tuple[int, int]:
        """(turns whose transcript is the phrase spoken, voice turns) of the call's session."""
        log = await self.bus.replay(call.sid, 0, None)
        events = [orjson.loads(e) for _, e in log.events]
        texts = [normalise(e.get("text", "")) for e in events
                 if e.get("type") == "user" and e.get("source") == "voice"]
        right = sum((Counter(texts) & Counter(normalise(x) for x in call.said)).values())
        call.heard = texts
        return right, len(texts)


async def receive_buffer(caller: Caller) -> dict[str, float]:
    """The caller's jitter buffer on the agent's audio so far: what it holds before the caller
    hears (:func:`voice.uplink_stats.jitter_buffer`)."""
    for p in caller.room.remote_participants.values():
        for pub in p.track_publications.values():
            if pub.kind == rtc.TrackKind.KIND_AUDIO and (got := await jitter_buffer(pub.track)):
                return got
    return {}


def jitter_summary(calls: list[Call]) -> dict[str, Any]:
    got = [c.jitter for c in calls if c.jitter]
    return {k: round(pct([j[k] for j in got], 50), 1) for k in got[0]} if got else {}


def mic_queue_summary(calls: list[Call]) -> dict[str, Any]:
    """The callers' microphone queues at their ends of speech (ms)."""
    got = [1000 * q for c in calls for q in c.mic_queue]
    return {"n": len(got), "p50_ms": round(pct(got, 50)), "p95_ms": round(pct(got, 95))} \
        if got else {"n": 0}


def summary(lat: list[float], from_queued: list[float] | None = None) -> dict[str, Any]:
    """p50/p95/max/min (ms) of ``lat``; with ``from_queued``, also its p50/p95 as
    ``p50_from_queued``/``p95_from_queued`` (the end of speech before session 17)."""
    ms = [x * 1000 for x in lat]
    if not ms:
        return {"n": 0}
    out = {"n": len(ms), "p50_ms": round(pct(ms, 50)), "p95_ms": round(pct(ms, 95)),
           "max_ms": round(max(ms)), "min_ms": round(min(ms))}
    if from_queued:
        q = [x * 1000 for x in from_queued]
        out |= {"p50_from_queued": round(pct(q, 50)), "p95_from_queued": round(pct(q, 95))}
    return out
