"""Voice benchmark: end of the caller's speech -> first agent audio, through a real LiveKit server.

Starts its own Redis, LiveKit server, edge, agent worker (offline demo model) and ONE voice
worker (``python -m agentia.cli voice``: the worker and the job processes it forks), then:

* ``latency``: N sequential calls. Each is a fresh room started the way the control plane
  starts it (:func:`voice.routes.open_call`: session opened on the bus, worker dispatched,
  room token); a ``livekit`` participant joins, waits until the agent is listening, speaks
  one phrase of ``voice/phrases.txt`` (espeak-ng, in real time, 20 ms frames) and records
  end of speech -> first non-silent frame of the agent's audio.
* ``capacity``: K concurrent calls for K in ``--levels``; all K join, then all speak their
  phrases at once (3 per call, each after the agent finished the previous answer; only the
  phrases the latency phase got answers to). Stops after the first level whose p50 exceeds
  ``--degrade`` x the sequential p50, or where a call fails (cannot join, or more than a third
  of the phrases go unanswered). The voice worker's process tree (worker + job processes) CPU,
  RSS and PSS are read from /proc during each level, with the LiveKit server's CPU, this
  client's CPU and the machine's idle time (the rest is foreign load).

Everything is on loopback, bounded in time (``--budget``), and stopped by PID.

    python -m loadtest.bench_voice                    # both, defaults below
    python -m loadtest.bench_voice --calls 20 --levels 1,2,4,6,8 --phrases-per-call 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from livekit import rtc
from livekit.agents.types import ATTRIBUTE_AGENT_STATE

from agentia.redis_server import RedisServer
from agentia.settings import from_env
from agentia.supervise import stop_all
from loadtest.bench_core import pct, rss_kib
from sessions.bus import Bus, connect
from voice.livekit_server import LiveKitServer, find_binary
from voice.routes import open_call
from voice.settings import VoiceSettings
from voice.speech import ESPEAK_RATE, espeak_pcm, normalise

ROOT = Path(__file__).resolve().parent.parent
RATE = 48_000
FRAME = RATE // 50  # 20 ms
LOUD = 300.0
"""RMS of int16 samples above which a received frame counts as agent audio (as the e2e test)."""
TARGET_P50_MS = 800.0
CLK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ /proc


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime+stime seconds) of ``pid``, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK


def tree(root: int) -> dict[int, float]:
    """``root`` and all its descendants: pid -> CPU seconds so far."""
    info: dict[int, tuple[int, float]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _stat(int(d))) is not None:
            info[int(d)] = st
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in info:
            out[pid] = info[pid][1]
            todo += [c for c, (pp, _) in info.items() if pp == pid]
    return out


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (forked job processes) counted once overall."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _safe_rss(pid: int) -> int:
    try:
        return rss_kib(pid)
    except OSError:  # it ended
        return 0


def tree_memory(root: int) -> tuple[int, int, int]:
    """(RSS KiB, PSS KiB, processes) summed over ``root`` and its descendants."""
    pids = tree(root)
    return (sum(_safe_rss(p) for p in pids),
            sum(pss_kib(p) for p in pids), len(pids))


def idle_jiffies() -> tuple[int, int]:
    """(idle+iowait, total) jiffies of the whole machine."""
    vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return vals[3] + vals[4], sum(vals)


class Sampler:
    """CPU (delta over the window) and RSS (peak of the sum, sampled) of the voice worker tree."""

    def __init__(self, voice_pid: int, livekit_pid: int, ours: list[int]) -> None:
        self.voice_pid, self.livekit_pid = voice_pid, livekit_pid
        self.ours = ours
        """Every process of the benchmark (Redis, edge, worker, LiveKit, voice, this one)."""
        self.peak_rss_kib = 0
        self.peak_pss_kib = 0
        self.peak_procs = 0
        self._task: asyncio.Task[None] | None = None

    def _cpu(self) -> dict[int, float]:
        return tree(self.voice_pid)

    def _ours(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for pid in self.ours:
            out.update(tree(pid))
        return out

    async def _sample(self) -> None:
        while True:
            rss, pss, n = tree_memory(self.voice_pid)
            self.peak_rss_kib = max(self.peak_rss_kib, rss)
            self.peak_pss_kib = max(self.peak_pss_kib, pss)
            self.peak_procs = max(self.peak_procs, n)
            await asyncio.sleep(0.5)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.cpu0 = self._cpu()
        self.lk0 = (_stat(self.livekit_pid) or (0, 0.0))[1]
        self.me0 = sum(os.times()[:2])
        self.idle0 = idle_jiffies()
        self.ours0 = self._ours()
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        cpu1 = self._cpu()
        ours1 = self._ours()
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        # processes that ended during the window lose their share (a job process lives as long
        # as its call, and the calls are all up during the window)
        voice_cpu = sum(c - self.cpu0.get(p, 0.0) for p, c in cpu1.items())
        lk = (_stat(self.livekit_pid) or (0, 0.0))[1] - self.lk0
        idle1 = idle_jiffies()
        busy = 1 - (idle1[0] - self.idle0[0]) / max(1, idle1[1] - self.idle0[1])
        main_rss = _safe_rss(self.voice_pid)
        ours = sum(c - self.ours0.get(p, 0.0) for p, c in ours1.items())
        cores = os.cpu_count() or 1
        return {
            "window_s": round(wall, 1),
            "voice_cpu_cores": round(voice_cpu / wall, 2),
            "voice_rss_mib_peak": round(self.peak_rss_kib / 1024, 1),
            "voice_pss_mib_peak": round(self.peak_pss_kib / 1024, 1),
            "voice_rss_mib_main": round(main_rss / 1024, 1),
            "voice_processes_peak": self.peak_procs,
            "livekit_cpu_cores": round(lk / wall, 2),
            "bench_client_cpu_cores": round((sum(os.times()[:2]) - self.me0) / wall, 2),
            "machine_busy_pct": round(100 * busy, 1),
            "other_load_cores": round(max(0.0, busy * cores - ours / wall), 2),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }


# ------------------------------------------------------------------ the caller


@dataclass
class Caller:
    """A room participant with a microphone fed in real time and ears on the agent."""

    room: rtc.Room
    source: rtc.AudioSource
    heard: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, rms)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    state: str = ""
    """The agent's state attribute (initializing, listening, thinking, speaking)."""
    states: list[tuple[float, str]] = field(default_factory=list)
    mic_subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    heard_agent: asyncio.Event = field(default_factory=asyncio.Event)
    listen_after: float = float("inf")
    queued: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    spoken: asyncio.Event = field(default_factory=asyncio.Event)
    spoken_at: float = 0.0

    @classmethod
    async def join(cls, url: str, token: str) -> Caller:
        room = rtc.Room()
        caller = cls(room, rtc.AudioSource(RATE, 1))

        @room.on("track_subscribed")
        def _on_track(track: rtc.Track, *_: Any) -> None:
            if track.kind == rtc.TrackKind.KIND_AUDIO:
                caller._spawn(caller._listen(track))

        @room.on("local_track_subscribed")
        def _on_mic_subscribed(_track: rtc.Track) -> None:
            caller.mic_subscribed.set()

        def check(p: rtc.Participant) -> None:
            st = p.attributes.get(ATTRIBUTE_AGENT_STATE)
            if st and st != caller.state:
                caller.state = st
                caller.states.append((time.monotonic(), st))

        room.on("participant_attributes_changed", lambda _changed, p: check(p))
        room.on("participant_connected", check)
        await room.connect(url, token)
        for p in room.remote_participants.values():
            check(p)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", caller.source)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await room.local_participant.publish_track(track, opts)
        return caller

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _listen(self, track: rtc.Track) -> None:
        async for ev in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
            pcm = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float64)
            now, rms = time.monotonic(), float(np.sqrt(np.mean(pcm**2)))
            self.heard.append((now, rms))
            if now > self.listen_after and rms > LOUD:
                self.heard_agent.set()

    def open_microphone(self) -> None:
        """Feed the microphone in real time, 20 ms a frame: queued speech, else silence."""
        async def feed() -> None:
            start = time.monotonic()
            for n in itertools.count():
                chunk, self.queued = self.queued[:FRAME], self.queued[FRAME:]
                if len(chunk) and not len(self.queued):
                    self.spoken_at = start + (n + 1) * 0.02
                    self.spoken.set()
                chunk = np.pad(chunk, (0, FRAME - len(chunk)))
                await self.source.capture_frame(rtc.AudioFrame(chunk.tobytes(), RATE, 1, FRAME))
                await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))
        self._spawn(feed())

    async def wait_listening(self, within: float, quiet_s: float = 0.3) -> None:
        """Until the agent is listening and nothing loud came for ``quiet_s``."""
        async def until() -> None:
            while True:
                last = next((at for at, rms in reversed(self.heard) if rms > LOUD), 0.0)
                if self.state == "listening" and time.monotonic() - last > quiet_s:
                    return
                await asyncio.sleep(0.05)
        await asyncio.wait_for(until(), within)

    async def wait_answered(self, after: float, within: float, quiet_s: float = 1.0) -> None:
        """Until the agent spoke after ``after``, went back to listening, and its audio has been
        quiet for ``quiet_s`` (state attributes can arrive late under load: the audio decides
        too, or the next phrase would talk over the previous answer)."""
        async def until() -> None:
            while True:
                spoke = next((at for at, st in self.states if at > after and st == "speaking"),
                             None)
                back = spoke is not None and any(at > spoke and st == "listening"
                                                 for at, st in self.states)
                last = next((at for at, rms in reversed(self.heard) if rms > LOUD), 0.0)
                if back and self.state == "listening" and time.monotonic() - last > quiet_s:
                    return
                await asyncio.sleep(0.05)
        await asyncio.wait_for(until(), within)

    async def say(self, pcm48k: np.ndarray) -> float:
        """Speak; returns the monotonic time at which the speech ended."""
        self.spoken.clear()
        self.heard_agent.clear()
        self.listen_after = time.monotonic() + len(pcm48k) / RATE
        self.queued = pcm48k
        await self.spoken.wait()
        return self.spoken_at

    def first_loud_after(self, t: float) -> float:
        return next(at for at, rms in self.heard if at > t and rms > LOUD)

    async def leave(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.room.disconnect()


async def speech_48k(text: str) -> np.ndarray:
    pcm = np.frombuffer(await espeak_pcm(text), dtype=np.int16)
    frame = rtc.AudioFrame(pcm.tobytes(), ESPEAK_RATE, 1, len(pcm))
    rs = rtc.AudioResampler(ESPEAK_RATE, RATE, num_channels=1)
    out = b"".join(bytes(f.data) for f in [*rs.push(frame), *rs.flush()])
    pcm = np.frombuffer(out, dtype=np.int16)
    voiced = np.flatnonzero(np.abs(pcm) > 100)  # espeak pads with silence: "end" = last sound
    return pcm[voiced[0]:voiced[-1] + 1]


# ------------------------------------------------------------------ calls


@dataclass
class Call:
    sid: str
    caller: Caller | None = None
    join_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)
    """The voice turns' transcripts in the session's log."""
    unanswered: list[str] = field(default_factory=list)
    overlapped: list[str] = field(default_factory=list)
    error: str = ""


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
                spoken = await caller.say(pcm)
                answered_at = None
                try:
                    await asyncio.wait_for(caller.heard_agent.wait(), self.answer_timeout)
                except TimeoutError:  # no answer: noted, the call goes on
                    seen = [st for at, st in caller.states if at > spoken]
                    call.unanswered.append(f"{text!r} (agent states after it: {seen})")
                    continue
                answered_at = spoken
                took = caller.first_loud_after(spoken) - spoken
                if took < self.s.voice_min_silence_s + self.s.voice_endpoint_delay_s:
                    # faster than the configured end of turn: the tail of the previous
                    # answer, not an answer to this phrase (not a latency)
                    call.overlapped.append(f"{text!r} {took * 1000:.0f} ms")
                    continue
                call.latencies.append(took)
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
        texts = [e.get("text", "") for e in events
                 if e.get("type") == "user" and e.get("source") == "voice"]
        right = sum((Counter(texts) & Counter(normalise(x) for x in call.said)).values())
        call.heard = texts
        return right, len(texts)


def summary(lat: list[float]) -> dict[str, Any]:
    ms = [x * 1000 for x in lat]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50_ms": round(pct(ms, 50)), "p95_ms": round(pct(ms, 95)),
            "max_ms": round(max(ms)) if ms else None, "min_ms": round(min(ms)) if ms else None}


async def latency(b: Bench, calls: int, deadline: float) -> dict[str, Any]:
    lat, joins, failed, right, turns = [], [], [], 0, 0
    unanswered: set[str] = set()
    answered: set[str] = set()
    misheard: dict[str, str] = {}
    for _ in range(calls):
        if time.monotonic() > deadline:
            break
        call = await b.join()
        await b.talk(call, 1)
        await asyncio.sleep(0.3)
        await b.leave(call)
        lat += call.latencies
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
    return {"calls": calls, **summary(lat), "failed": len(failed), "errors": failed[:8],
            "unanswered_phrases": sorted(unanswered - answered),
            "transcripts_right": f"{right}/{turns}", "misheard": misheard,
            "join_to_listening_p50_s": round(pct(joins, 50), 2) if joins else None}


async def capacity(b: Bench, levels: list[int], phrases: int, base_p50: float | None,
                   degrade: float, voice_pid: int, livekit_pid: int, ours: list[int],
                   deadline: float) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    degraded_at = None
    for k in levels:
        # a level takes about joins + phrases x (speech + answer): stop before the budget
        if time.monotonic() + 20 + phrases * 16 > deadline:
            out.append({"k": k, "skipped": "time budget"})
            break
        calls = list(await asyncio.gather(*(b.join() for _ in range(k))))
        sampler = Sampler(voice_pid, livekit_pid, ours)
        sampler.start()
        await asyncio.gather(*(b.talk(c, phrases) for c in calls))
        res = await sampler.stop()
        await asyncio.gather(*(b.leave(c) for c in calls))
        lat = [x for c in calls for x in c.latencies]
        errors = [c.error for c in calls if c.error]
        unanswered = [u for c in calls for u in c.unanswered]
        rt = [await b.heard_right(c) for c in calls]
        level = {"k": k, **summary(lat), "failed_calls": len(errors), "errors": errors[:5],
                 "phrases_spoken": sum(len(c.said) for c in calls),
                 "unanswered": len(unanswered), "unanswered_detail": unanswered[:5],
                 "overlapped": [o for c in calls for o in c.overlapped],
                 "transcripts_right": f"{sum(r for r, _ in rt)}/{sum(t for _, t in rt)}",
                 "join_to_listening_max_s": round(max((c.join_s for c in calls), default=0), 2),
                 **res}
        out.append(level)
        print(f"  capacity {orjson.dumps(level).decode()}", file=sys.stderr, flush=True)
        if base_p50 is None and k == 1 and lat:
            base_p50 = pct(lat, 50) * 1000
        p50 = pct(lat, 50) * 1000 if lat else float("inf")
        # a call fails when it cannot join or a third of its phrases go unanswered
        failing = errors or len(unanswered) * 3 > sum(len(c.said) for c in calls)
        if failing or (base_p50 is not None and p50 > degrade * base_p50):
            degraded_at = k
            break
        # let the job processes of this level exit and the pool warm up again
        await asyncio.sleep(2)
    return {"levels": out, "phrases_per_call": phrases, "phrases": [t for t, _ in b.speech],
            "baseline_p50_ms": round(base_p50) if base_p50 else None,
            "degrade_factor": degrade, "degraded_at_k": degraded_at,
            "max_k_p50_within_target": max((lv["k"] for lv in out if "p50_ms" in lv
                                             and lv["p50_ms"] <= TARGET_P50_MS
                                             and not lv["failed_calls"]), default=None)}


# ------------------------------------------------------------------ processes


def spawn(args: list[str], env: dict[str, str], ready: str,
          log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with open(log, "wb") as err:  # the child keeps its own fd
        proc = subprocess.Popen([sys.executable, "-m", "agentia.cli", *args], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.decode().startswith(ready):
            return proc, line.decode().strip()
    raise RuntimeError(f"{args} exited before it was ready; see {log}")


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    model = next((ln.split(":", 1)[1].strip() for ln in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return (f"{os.cpu_count()} vCPU ({model}), {mem} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


async def measure(a: argparse.Namespace, env: dict[str, str], voice_pid: int,
                  livekit_pid: int, ours: list[int], t_start: float) -> dict[str, Any]:
    deadline = t_start + a.budget - 25  # keep time to stop everything
    phrases = VoiceSettings(voice_phrases=a.phrases).phrases()
    speech = [(p, await speech_48k(p)) for p in phrases]
    s = from_env(VoiceSettings, redis_url=env["AGENTIA_REDIS_URL"],
                 livekit_url=env["AGENTIA_LIVEKIT_URL"],
                 livekit_api_key=env["AGENTIA_LIVEKIT_API_KEY"],
                 livekit_api_secret=env["AGENTIA_LIVEKIT_API_SECRET"],
                 voice_agent_name=env["AGENTIA_VOICE_AGENT_NAME"])
    bus = Bus(connect(s.redis_url), prefix=s.redis_prefix, shards=s.shards)
    try:
        b = Bench(s, bus, speech, a.join_timeout, a.answer_timeout)
        out: dict[str, Any] = {}
        if a.calls:
            lat_deadline = deadline - (0 if not a.levels else 150)
            out["latency"] = await latency(b, a.calls, lat_deadline)
            print(f"  latency {orjson.dumps(out['latency']).decode()}", file=sys.stderr,
                  flush=True)
        if a.levels:
            base = out.get("latency", {}).get("p50_ms")
            out["capacity"] = await capacity(b, a.levels, a.phrases_per_call, base, a.degrade,
                                             voice_pid, livekit_pid, ours, deadline)
        return out
    finally:
        await bus.close()


def bench(a: argparse.Namespace) -> dict[str, Any]:
    t_start = time.monotonic()
    started = dt.datetime.now(dt.UTC)
    binary = find_binary()
    if binary is None:
        raise SystemExit("no LiveKit server binary (go install "
                         "github.com/livekit/livekit-server/cmd/server@v1.13.5)")
    work = Path(tempfile.mkdtemp(prefix="agentia-bench-voice-"))
    procs: list[subprocess.Popen[bytes]] = []
    redis = RedisServer(work / "redis", appendonly=True).start()
    lk = None
    try:
        lk = LiveKitServer(binary, work / "livekit", a.livekit_target_load).start()
        env = {**os.environ, "AGENTIA_REDIS_URL": redis.url, "AGENTIA_LOG_LEVEL": "info",
               "PYTHONUNBUFFERED": "1",
               "AGENTIA_LIVEKIT_URL": lk.url, "AGENTIA_LIVEKIT_API_KEY": lk.key,
               "AGENTIA_LIVEKIT_API_SECRET": lk.secret,
               "AGENTIA_VOICE_AGENT_NAME": f"agentia-voice-bench-{uuid.uuid4().hex[:6]}",
               "AGENTIA_VOICE_LOAD_THRESHOLD": str(a.load_threshold),
               "AGENTIA_VOICE_IDLE_PROCESSES": str(a.idle_processes),
               "AGENTIA_VOICE_DRAIN_S": "2", "AGENTIA_DEMO_WORD_DELAY": str(a.demo_word_delay)}
        env.pop("OPENAI_API_KEY", None)
        env.pop("AGENTIA_MODEL_BASE_URL", None)
        procs.append(spawn(["gateway", "--port", "0"], env, "AGENTIA_EDGE_READY",
                           work / "edge.log")[0])
        procs.append(spawn(["worker"], env, "AGENTIA_WORKER_READY", work / "worker.log")[0])
        voice, _ = spawn(["voice"], env, "AGENTIA_VOICE_READY", work / "voice.log")
        procs.append(voice)
        assert lk.proc is not None and redis.proc is not None
        redis_pid = redis.proc.pid
        results = asyncio.run(asyncio.wait_for(
            measure(a, env, voice.pid, lk.proc.pid,
                    [os.getpid(), lk.proc.pid, *(p.pid for p in procs), redis_pid], t_start),
            max(30.0, a.budget - (time.monotonic() - t_start) - 20)))
    finally:
        stop_all(list(reversed(procs)), grace_s=10)
        if lk is not None:
            lk.stop()
        redis.stop()
    tracebacks = "Traceback" in (work / "voice.log").read_text(errors="replace")
    return {
        "benchmark": "voice", "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(), "machine": machine(),
        "command": "python -m loadtest.bench_voice " + " ".join(sys.argv[1:]),
        "setup": {"voice_executor": "process", "idle_processes": a.idle_processes,
                  "load_threshold": a.load_threshold,
                  "livekit_target_load": a.livekit_target_load,
                  "demo_word_delay_s": a.demo_word_delay, "model": "offline demo model "
                  "(default worker agent, tool calls)", "min_silence_s": 0.35,
                  "endpoint_delay_s": 0.2, "target_p50_ms": TARGET_P50_MS},
        **results,
        "latency_p50_meets_target": (results.get("latency", {}).get("p50_ms", 1e9)
                                     <= TARGET_P50_MS) if "latency" in results else None,
        "wall_s": round(time.monotonic() - t_start, 1),
        "voice_log_has_traceback": tracebacks, "logs": str(work),
    }


def _terminate(_sig: int, _frame: Any) -> None:
    raise SystemExit("terminated")  # the finally blocks stop every child by PID


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=20, help="sequential calls (0: skip)")
    p.add_argument("--levels", default="1,2,4,6,8",
                   help="concurrent calls per capacity level, comma separated ('': skip)")
    p.add_argument("--phrases-per-call", type=int, default=3)
    p.add_argument("--degrade", type=float, default=2.0,
                   help="stop once p50 exceeds this times the single-call p50")
    p.add_argument("--phrases", default=str(ROOT / "voice" / "phrases.txt"))
    p.add_argument("--idle-processes", type=int, default=1,
                   help="AGENTIA_VOICE_IDLE_PROCESSES of the voice worker")
    p.add_argument("--load-threshold", type=float, default=1000.0,
                   help="AGENTIA_VOICE_LOAD_THRESHOLD (default: never refuse a call, to find "
                        "where latency degrades rather than where LiveKit stops dispatching)")
    p.add_argument("--livekit-target-load", type=float, default=100.0,
                   help="the LiveKit server's agents.target_load (its default 0.7 refuses "
                        "dispatches while the machine's CPU is above 70%%; 100: never)")
    p.add_argument("--demo-word-delay", type=float, default=0.0,
                   help="AGENTIA_DEMO_WORD_DELAY of the agent worker (0: as the e2e test)")
    p.add_argument("--join-timeout", type=float, default=40.0)
    p.add_argument("--answer-timeout", type=float, default=10.0,
                   help="seconds from end of speech to the agent's first audio before the "
                        "phrase counts as unanswered")
    p.add_argument("--budget", type=float, default=570.0, help="seconds for the whole run")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    a.levels = [int(x) for x in a.levels.split(",") if x.strip()]
    out = bench(a)
    text = orjson.dumps(out, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
