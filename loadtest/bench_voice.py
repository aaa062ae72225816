"""Voice benchmark: end of the caller's speech -> first agent audio, through a real LiveKit server.

Starts its own Redis, LiveKit server, edge, agent worker (offline demo model) and ONE voice
worker (``python -m launch.cli voice``: the worker and the job processes it forks), then:

* ``latency``: N sequential calls. Each is a fresh room started the way the control plane
  starts it (:func:`voice.routes.open_call`: session opened on the bus, worker dispatched,
  room token); a ``livekit`` participant (:class:`voice.caller.Caller`) joins, waits until
  the agent is listening, speaks one free sentence (espeak-ng, in real time, 20 ms frames) and
  records end of speech -> first non-silent frame of the agent's audio.
* ``capacity``: K concurrent calls for K in ``--levels``; all K join, then all speak their
  sentences at once (3 per call, each after the agent finished the previous answer; only the
  sentences the latency phase got answers to; at least 8 per level). The most calls whose p95
  stays under ``--p95-limit`` ms is the worker's capacity; it stops after a level whose p95
  exceeds twice that (or ``--stop-p95``), or where a call fails (cannot join, or more than a
  third of the sentences go unanswered). The voice worker's process tree (worker + job
  processes) CPU, RSS and PSS are read from /proc during each level, with the LiveKit server's
  CPU, this client's CPU and the machine's idle time (the rest is foreign load).

The agent worker runs the demo model paced at ``--model-tokens-per-s`` (60). ``--tree``
(repeatable) runs the stack (edge, agent worker, voice worker) from other checkouts,
``--rounds`` times each, interleaved (the order reversed every other round): before and after
side by side, in the same machine state. Each phase also records where the time went
(``stages``: the voice worker's logged turn timings, :mod:`loadtest.voice_stages`) and each
level the voice worker tree's PSS per call (and before any call: the record's
``voice_pss_mib_idle``, ``voice_pss_mib_added_per_call``, ``memory_goal_met_at_calls``).

Before the calls it times the configured STT alone on each sentence (in this process, the
machine otherwise as it is). Everything is on loopback, bounded in time (``--budget``), and
stopped by PID. ``--record`` writes the figures to ``loadtest/results/voice-latency.json``.

    python -m loadtest.bench_voice --record           # both phases, defaults below
    python -m loadtest.bench_voice --calls 20 --levels 1,2,3,4,6 --phrases-per-call 3
    python -m loadtest.bench_voice --stt pocketsphinx  # the grammar recogniser instead
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

from agentia import supervise
from agentia.settings import from_env
from agentia.supervise import stop_all
from launch.redis_server import RedisServer
from loadtest.bench_core import pct, rss_kib
from loadtest.record import record
from loadtest.voice_stages import log_size, path, recogniser_counts, stages
from sessions.bus import Bus, connect
from voice.caller import Caller, speech_48k
from voice.livekit_server import LiveKitServer, find_binary
from voice.routes import open_call
from voice.settings import VoiceSettings
from voice.speech import normalise
from voice.worker import recogniser

ROOT = Path(__file__).resolve().parent.parent
TARGET_P50_MS = 600.0
P95_LIMIT_MS = 900.0
MEMORY_GOAL_MB = 150.0
"""Issue 16: at most this many MB (10^6 bytes) of the voice worker tree's PSS per call."""
MIN_ANSWER_S = 0.2
"""An agent sound sooner than this after the caller's speech ended cannot answer it (the
shortest end of turn, 0.1 s of silence, plus a transcription): it is ignored."""
TOKENS_PER_WORD = 4 / 3
"""English text is ~0.75 words a token (OpenAI's rule of thumb): the demo model, which streams
a word at a time, is paced at ``tokens/s / TOKENS_PER_WORD`` words a second."""
MIN_SAMPLES = 8
"""Sentences spoken per capacity level at least (split over its calls)."""
"""Capacity: the most concurrent calls whose end-of-speech -> first-audio p95 stays under it."""
SENTENCES = (
    "tell me about the weather in paris tomorrow", "what time is it", "tell me a story",
    "how are you today", "thank you very much", "i would like to change my password",
    "where is the nearest train station", "good morning", "stop",
)
"""Free sentences (no grammar): espeak-ng at 170 wpm, each transcribed exactly by Whisper
tiny.en when fed directly (the latency phase reports what it heard through the room)."""
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


def thread_cpu(root: int) -> dict[str, float]:
    """CPU seconds so far of ``root``'s tree, by thread name (``python``: the Python threads;
    the rest are native: WebRTC's, LiveKit's Rust runtime's, onnxruntime's, CTranslate2's)."""
    out: dict[str, float] = {}
    for pid in tree(root):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except OSError:
                continue
            name, rest = raw[raw.index("(") + 1:raw.rindex(")")], raw.rsplit(")", 1)[1].split()
            out[name] = out.get(name, 0.0) + (int(rest[11]) + int(rest[12])) / CLK
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


def reset_peak_rss(pid: int) -> bool:
    """Start the kernel's peak RSS (``VmHWM``) of ``pid`` again from its current RSS."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:  # not ours to reset, or gone
        return False
    return True


def peak_rss_kib(pid: int) -> int:
    """The kernel's peak RSS of ``pid`` (``VmHWM``): unlike a sample, it misses no transient."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


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
        self.hwm_reset = reset_peak_rss(self.voice_pid)
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
            # the worker process's own peak RSS over the window, kept by the kernel (the
            # sampled peaks above are read every 0.5 s); null when it could not be reset
            "voice_rss_mib_hwm": (round(peak_rss_kib(self.voice_pid) / 1024, 1)
                                  if self.hwm_reset else None),
            "voice_processes_peak": self.peak_procs,
            "livekit_cpu_cores": round(lk / wall, 2),
            "bench_client_cpu_cores": round((sum(os.times()[:2]) - self.me0) / wall, 2),
            "machine_busy_pct": round(100 * busy, 1),
            "other_load_cores": round(max(0.0, busy * cores - ours / wall), 2),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }


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
    answers: list[tuple[str, float, float]] = field(default_factory=list)
    """(session, end of speech, first loud frame heard), wall clock: :func:`path`'s input."""
    jitter: dict[str, float] = field(default_factory=dict)


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
                if took < MIN_ANSWER_S:
                    # faster than any end of turn: the tail of the previous answer, not an
                    # answer to this phrase (not a latency)
                    call.overlapped.append(f"{text!r} {took * 1000:.0f} ms")
                    continue
                call.latencies.append(took)
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
    """The caller's jitter buffer on the agent's audio so far (WebRTC's inbound-rtp stats,
    averaged over the samples it played out: ms): what it holds before the caller hears."""
    for p in caller.room.remote_participants.values():
        for pub in p.track_publications.values():
            if pub.track is None or pub.kind != rtc.TrackKind.KIND_AUDIO:
                continue
            for st in await pub.track.get_stats():
                if not st.HasField("inbound_rtp"):
                    continue
                inb = st.inbound_rtp.inbound
                n = max(1, inb.jitter_buffer_emitted_count)
                return {"delay_ms": round(1000 * inb.jitter_buffer_delay / n, 1),
                        "target_ms": round(1000 * inb.jitter_buffer_target_delay / n, 1),
                        "minimum_ms": round(1000 * inb.jitter_buffer_minimum_delay / n, 1)}
    return {}


def jitter_summary(calls: list[Call]) -> dict[str, Any]:
    got = [c.jitter for c in calls if c.jitter]
    return {k: round(pct([j[k] for j in got], 50), 1) for k in got[0]} if got else {}


def summary(lat: list[float]) -> dict[str, Any]:
    ms = [x * 1000 for x in lat]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50_ms": round(pct(ms, 50)), "p95_ms": round(pct(ms, 95)),
            "max_ms": round(max(ms)) if ms else None, "min_ms": round(min(ms)) if ms else None}


async def latency(b: Bench, calls: int, deadline: float) -> dict[str, Any]:
    lat, joins, failed, right, turns = [], [], [], 0, 0
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
    return {"calls": calls, **summary(lat), "failed": len(failed), "errors": failed[:8],
            "unanswered_phrases": sorted(unanswered - answered),
            "transcripts_right": f"{right}/{turns}", "misheard": misheard,
            "join_to_listening_p50_s": round(pct(joins, 50), 2) if joins else None,
            "window_s": round(time.monotonic() - t0, 1), "machine_busy_pct": round(100 * busy, 1),
            "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
            "answers": [a for c in done for a in c.answers],
            "caller_jitter_buffer_p50": jitter_summary(done)}


async def idle_cpu(seconds: float, voice_pid: int, livekit_pid: int,
                   ours: list[int]) -> dict[str, Any]:
    """The level's calls joined, every caller silent and the agent listening, for
    ``seconds``: the CPU of the per-frame path alone (the room's audio in, the VAD), no
    transcript or reply."""
    sampler = Sampler(voice_pid, livekit_pid, ours)
    sampler.start()
    threads0 = thread_cpu(voice_pid)
    await asyncio.sleep(seconds)
    threads = {n: c - threads0.get(n, 0.0) for n, c in thread_cpu(voice_pid).items()}
    res = await sampler.stop()
    return {**{k: res[k] for k in ("window_s", "voice_cpu_cores", "livekit_cpu_cores",
                                   "bench_client_cpu_cores", "machine_busy_pct",
                                   "other_load_cores")},
            "voice_threads_cores": {name: round(c / res["window_s"], 3) for name, c in
                                    sorted(threads.items(), key=lambda x: -x[1])[:6]}}


async def capacity(b: Bench, levels: list[int], phrases: int, p95_limit: float,
                   stop_p95: float,
                   voice_pid: int, livekit_pid: int, ours: list[int],
                   deadline: float, log: Path, idle_s: float = 0.0) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    degraded_at = None
    for k in levels:
        # a level takes about joins + phrases x (speech + answer): stop before the budget
        if time.monotonic() + 20 + phrases * 16 > deadline:
            out.append({"k": k, "skipped": "time budget"})
            break
        calls = list(await asyncio.gather(*(b.join() for _ in range(k))))
        idle = await idle_cpu(idle_s, voice_pid, livekit_pid, ours) if idle_s else None
        sampler = Sampler(voice_pid, livekit_pid, ours)
        sampler.start()
        at = log_size(log)
        per_call = max(phrases, -(-MIN_SAMPLES // k))  # a p95 needs a few samples
        await asyncio.gather(*(b.talk(c, per_call) for c in calls))
        res = await sampler.stop()
        res["voice_pss_mib_per_call"] = round(res["voice_pss_mib_peak"] / k, 1)
        # the voice worker's CPU for the level's phrases (CPU-s, each phrase and its reply)
        res["voice_cpu_s_per_phrase"] = round(
            res["voice_cpu_cores"] * res["window_s"] / max(1, per_call * k), 2)
        if idle is not None:
            res["idle"] = idle
        res["stages"] = stages(log, at)
        res["path"] = path(log, at, [a for c in calls for a in c.answers])
        res["caller_jitter_buffer_p50"] = jitter_summary(calls)
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
                 "heard_not_said": [h for c in calls for h in c.heard
                                    if h not in {normalise(x) for x in c.said}][:8],
                 "join_to_listening_max_s": round(max((c.join_s for c in calls), default=0), 2),
                 **res}
        out.append(level)
        print(f"  capacity {orjson.dumps(level).decode()}", file=sys.stderr, flush=True)
        p95 = pct(lat, 95) * 1000 if lat else float("inf")
        # a call fails when it cannot join or a third of its phrases go unanswered
        failing = errors or len(unanswered) * 3 > sum(len(c.said) for c in calls)
        level["within_limit"] = not failing and p95 <= p95_limit
        if failing or p95 > stop_p95:  # past the limit, a level more shows the trend
            degraded_at = k
            break
        # let the job processes of this level exit and the pool warm up again
        await asyncio.sleep(2)
    within = [lv["k"] for lv in out if lv.get("within_limit")]
    # the capacity: the highest level under the limit with every level below it under it too
    best = max((k for k in within if all(j in within for j in range(1, k) if j in levels)),
               default=None)
    return {"levels": out, "phrases_per_call": phrases, "phrases": [t for t, _ in b.speech],
            "p95_limit_ms": p95_limit, "degraded_at_k": degraded_at,
            "max_k_p95_within_limit": best}


# ------------------------------------------------------------------ processes


def spawn(args: list[str], env: dict[str, str], ready: str, log: Path,
          tree: Path = ROOT) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """``agentia <args>`` with the code of ``tree`` (its directory first on the path)."""
    return supervise.spawn(args, {**env, "PYTHONPATH": str(tree)}, ready, 180, cwd=tree,
                           stderr=log)


def commit(tree: Path = ROOT) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, text=True,
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
                  livekit_pid: int, ours: list[int], t_start: float,
                  log: Path) -> dict[str, Any]:
    deadline = t_start + a.budget - 25  # keep time to stop everything
    phrases = (VoiceSettings(voice_phrases=a.phrases).phrases() if a.phrases
               else list(SENTENCES))
    speech = [(p, await speech_48k(p)) for p in phrases]
    s = from_env(VoiceSettings, redis_url=env["AGENTIA_REDIS_URL"],
                 livekit_url=env["AGENTIA_LIVEKIT_URL"],
                 livekit_api_key=env["AGENTIA_LIVEKIT_API_KEY"],
                 livekit_api_secret=env["AGENTIA_LIVEKIT_API_SECRET"],
                 voice_agent_name=env["AGENTIA_VOICE_AGENT_NAME"], voice_stt=a.stt)
    bus = Bus(connect(s.redis_url), prefix=s.redis_prefix, shards=s.shards)
    try:
        b = Bench(s, bus, speech, a.join_timeout, a.answer_timeout)
        # the worker before its first call: engines loaded, a warm idle job (the base)
        out: dict[str, Any] = {"voice_pss_mib_idle": round(tree_memory(voice_pid)[1] / 1024, 1)}
        out["stt_alone"] = await stt_alone(s, speech, a.stt_rounds)
        print(f"  stt {orjson.dumps(out['stt_alone']).decode()}", file=sys.stderr, flush=True)
        if a.calls:
            lat_deadline = deadline - (0 if not a.levels else 150)
            at = log_size(log)
            out["latency"] = await latency(b, a.calls, lat_deadline)
            out["latency"]["stages"] = stages(log, at)
            out["latency"]["path"] = path(log, at, out["latency"].pop("answers"))
            print(f"  latency {orjson.dumps(out['latency']).decode()}", file=sys.stderr,
                  flush=True)
        if a.levels:
            out["capacity"] = await capacity(b, a.levels, a.phrases_per_call, a.p95_limit,
                                             a.stop_p95 or 2 * a.p95_limit,
                                             voice_pid, livekit_pid, ours, deadline, log,
                                             a.idle_s)
        await asyncio.sleep(2)  # the last calls' recognisers log their counts as they close
        out["recogniser"] = recogniser_counts(log)
        return out
    finally:
        await bus.close()


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
            "p50_ms": round(pct(times, 50)), "p95_ms": round(pct(times, 95)),
            "max_ms": round(max(times)), "right": f"{right}/{len(times)}"}


def figures(out: dict[str, Any], p95_limit: float) -> dict[str, Any]:
    """The figures ``--record`` keeps (docs/benchmarks.md and the capacity model read them)."""
    lat, cap = out.get("latency", {}), out.get("capacity", {})
    levels = [{k: lv.get(k) for k in ("k", "n", "p50_ms", "p95_ms", "max_ms", "failed_calls",
                                     "unanswered", "transcripts_right", "heard_not_said",
                                     "voice_cpu_cores", "voice_cpu_s_per_phrase", "idle",
                                     "bench_client_cpu_cores", "voice_pss_mib_peak",
                                     "voice_pss_mib_per_call",
                                     "voice_rss_mib_peak", "voice_rss_mib_hwm",
                                     "voice_processes_peak", "machine_busy_pct",
                                     "other_load_cores", "within_limit", "stages", "path",
                                     "caller_jitter_buffer_p50")}
              for lv in cap.get("levels", []) if "skipped" not in lv]
    best = cap.get("max_k_p95_within_limit")
    return {
        "tree": out.get("tree"), "commit": out.get("commit"), "setup": out.get("setup"),
        "model_tokens_per_s": out.get("setup", {}).get("model_tokens_per_s"),
        "stages_sequential": lat.get("stages"), "recogniser": out.get("recogniser"),
        "path_sequential": lat.get("path"),
        "caller_jitter_buffer_sequential": lat.get("caller_jitter_buffer_p50"),
        "stt": out["stt_alone"]["stt"], "stt_ms_per_utterance": out["stt_alone"],
        "end_of_speech_to_first_audio_ms": {
            "sequential": {k: lat.get(k) for k in ("n", "p50_ms", "p95_ms", "max_ms", "failed",
                                                   "machine_busy_pct", "loadavg_1m")},
            "concurrent": levels},
        "transcripts_right_sequential": lat.get("transcripts_right"),
        "misheard": lat.get("misheard"), "p95_limit_ms": p95_limit,
        f"max_calls_p95_under_{p95_limit:.0f}ms": best,
        # null when no level met the p95 bound: `agentia capacity` then says so and asks for
        # --calls-per-voice-worker rather than inventing a figure
        "calls_per_voice_worker": best,
        **memory_figures(out.get("voice_pss_mib_idle"), levels),
    }


def memory_figures(idle_mib: float | None, levels: list[dict[str, Any]]) -> dict[str, Any]:
    """The voice worker tree's PSS: before any call, per call at each level (peak ÷ calls)
    and what each call added to the idle worker, against the issue's MB per call (met only
    at a level whose calls all took place: fewer calls would share the same worker)."""
    per_call = {str(lv["k"]): lv.get("voice_pss_mib_per_call") for lv in levels}
    whole = {str(lv["k"]) for lv in levels if not lv.get("failed_calls")}
    added = {str(lv["k"]): round((lv["voice_pss_mib_peak"] - idle_mib) / lv["k"], 1)
             for lv in levels if idle_mib is not None and lv.get("voice_pss_mib_peak")}
    goal_mib = MEMORY_GOAL_MB * 1e6 / 2**20
    return {"voice_pss_mib_idle": idle_mib, "voice_pss_mib_per_call": per_call,
            "voice_pss_mib_added_per_call": added, "memory_goal_mb_per_call": MEMORY_GOAL_MB,
            "memory_goal_met_at_calls": [int(k) for k, v in per_call.items()
                                         if v is not None and v <= goal_mib and k in whole]}


def overrides(a: argparse.Namespace) -> dict[str, str]:
    """The voice worker's settings this run gives it (the rest are the tree's defaults)."""
    env = dict(kv.split("=", 1) for kv in a.set)
    if a.executor:
        env["AGENTIA_VOICE_EXECUTOR"] = a.executor
    return env


def bench(a: argparse.Namespace, tree: Path = ROOT) -> dict[str, Any]:
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
        env = {**os.environ, "AGENTIA_DEV": "true",  # local: the public dev secret
               "AGENTIA_REDIS_URL": redis.url, "AGENTIA_LOG_LEVEL": "info",
               "PYTHONUNBUFFERED": "1",
               "AGENTIA_LIVEKIT_URL": lk.url, "AGENTIA_LIVEKIT_API_KEY": lk.key,
               "AGENTIA_LIVEKIT_API_SECRET": lk.secret,
               "AGENTIA_VOICE_AGENT_NAME": f"agentia-voice-bench-{uuid.uuid4().hex[:6]}",
               "AGENTIA_VOICE_LOAD_THRESHOLD": str(a.load_threshold),
               "AGENTIA_VOICE_MAX_CALLS": str(a.max_calls),
               "AGENTIA_VOICE_IDLE_PROCESSES": str(a.idle_processes),
               "AGENTIA_VOICE_DRAIN_S": "2", "AGENTIA_DEMO_WORD_DELAY": str(a.demo_word_delay),
               "AGENTIA_VOICE_STT": a.stt, **overrides(a)}
        env.pop("OPENAI_API_KEY", None)
        env.pop("AGENTIA_MODEL_BASE_URL", None)
        procs.append(spawn(["gateway", "--port", "0"], env, "AGENTIA_EDGE_READY",
                           work / "edge.log", tree)[0])
        procs.append(spawn(["worker"], env, "AGENTIA_WORKER_READY", work / "worker.log",
                           tree)[0])
        voice, _ = spawn(["voice"], env, "AGENTIA_VOICE_READY", work / "voice.log", tree)
        procs.append(voice)
        assert lk.proc is not None and redis.proc is not None
        redis_pid = redis.proc.pid
        results = asyncio.run(asyncio.wait_for(
            measure(a, env, voice.pid, lk.proc.pid,
                    [os.getpid(), lk.proc.pid, *(p.pid for p in procs), redis_pid], t_start,
                    work / "voice.log"),
            max(30.0, a.budget - (time.monotonic() - t_start) - 20)))
    finally:
        stop_all(list(reversed(procs)), grace_s=10)
        if lk is not None:
            lk.stop()
        redis.stop()
    tracebacks = "Traceback" in (work / "voice.log").read_text(errors="replace")
    return {
        "benchmark": "voice", "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "tree": str(tree), "commit": commit(tree), "machine": machine(),
        "command": "python -m loadtest.bench_voice " + " ".join(sys.argv[1:]),
        "setup": {"settings": overrides(a) or "the tree's defaults",
                  "model_tokens_per_s": a.model_tokens_per_s,
                  "idle_processes": a.idle_processes,
                  "max_calls": a.max_calls,
                  "load_threshold": a.load_threshold,
                  "livekit_target_load": a.livekit_target_load,
                  "demo_word_delay_s": a.demo_word_delay, "model": "offline demo model "
                  "(default worker agent, tool calls)", "stt": a.stt,
                  "target_p50_ms": TARGET_P50_MS},
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
    p.add_argument("--levels", default="1,2,3,4,6",
                   help="concurrent calls per capacity level, comma separated ('': skip)")
    p.add_argument("--phrases-per-call", type=int, default=3)
    p.add_argument("--p95-limit", type=float, default=P95_LIMIT_MS,
                   help="capacity: the most concurrent calls whose p95 (ms) is within this")
    p.add_argument("--stt", choices=("whisper", "pocketsphinx"), default="whisper")
    p.add_argument("--phrases", default="",
                   help="a file of phrases to speak (default: built-in free sentences; "
                        "voice/phrases.txt with --stt pocketsphinx)")
    p.add_argument("--record", action="store_true",
                   help="write loadtest/results/voice-latency.json (loadtest/record.py)")
    p.add_argument("--record-as", default="voice-latency", metavar="NAME",
                   help="--record writes loadtest/results/NAME.json instead (voice-memory: "
                        "the memory run of docs/voice.md)")
    p.add_argument("--idle-processes", type=int, default=1,
                   help="AGENTIA_VOICE_IDLE_PROCESSES of the voice worker")
    p.add_argument("--load-threshold", type=float, default=1000.0,
                   help="AGENTIA_VOICE_LOAD_THRESHOLD (default: never refuse a call, to find "
                        "where latency degrades rather than where LiveKit stops dispatching)")
    p.add_argument("--max-calls", type=int, default=16,
                   help="AGENTIA_VOICE_MAX_CALLS: the worker reports calls/this as its load "
                        "(0: the machine's CPU, which other work on a shared box pushes to 1.0, "
                        "where LiveKit stops dispatching)")
    p.add_argument("--livekit-target-load", type=float, default=100.0,
                   help="the LiveKit server's agents.target_load (its default 0.7 refuses "
                        "dispatches while the machine's CPU is above 70%%; 100: never)")
    p.add_argument("--model-tokens-per-s", type=float, default=60.0,
                   help="pace of the demo model's reply, in tokens/s (a word counts "
                        f"{TOKENS_PER_WORD:.2f} tokens); 0: the whole reply at once")
    p.add_argument("--tree", type=Path, action="append", default=[],
                   help="run the stack (edge, agent worker, voice worker) from this checkout; "
                        "repeatable: the trees alternate within each round (default: this one)")
    p.add_argument("--rounds", type=int, default=1,
                   help="runs per tree, interleaved (the order reversed every other round)")
    p.add_argument("--executor", choices=("", "process", "thread"), default="",
                   help="AGENTIA_VOICE_EXECUTOR ('': the tree's default)")
    p.add_argument("--set", action="append", default=[], metavar="AGENTIA_X=V",
                   help="a further setting of every tree's processes (repeatable)")
    p.add_argument("--stop-p95", type=float, default=0.0,
                   help="capacity: no further level after one whose p95 (ms) exceeds this "
                        "(default: twice --p95-limit)")
    p.add_argument("--stt-rounds", type=int, default=3,
                   help="times each sentence is transcribed by the STT alone, before the calls")
    p.add_argument("--idle-s", type=float, default=10.0,
                   help="capacity: seconds of each level's calls joined and silent, before "
                        "they speak, whose CPU is recorded as the level's ``idle`` (the "
                        "per-frame path alone; 0: skip)")
    p.add_argument("--join-timeout", type=float, default=40.0)
    p.add_argument("--answer-timeout", type=float, default=10.0,
                   help="seconds from end of speech to the agent's first audio before the "
                        "phrase counts as unanswered")
    p.add_argument("--budget", type=float, default=570.0, help="seconds for each run")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    a.levels = [int(x) for x in a.levels.split(",") if x.strip()]
    a.demo_word_delay = (round(TOKENS_PER_WORD / a.model_tokens_per_s, 4)
                         if a.model_tokens_per_s > 0 else 0.0)
    if any("=" not in kv or not kv.startswith("AGENTIA_") for kv in a.set):
        p.error("--set takes AGENTIA_NAME=VALUE")
    if a.stt == "pocketsphinx" and not a.phrases:
        a.phrases = str(ROOT / "voice" / "phrases.txt")
    trees = [t.resolve() for t in a.tree] or [ROOT]
    runs = []
    for rnd in range(a.rounds):
        for tree in trees if rnd % 2 == 0 else trees[::-1]:
            print(f"round {rnd + 1}: {tree}", file=sys.stderr, flush=True)
            runs.append({"round": rnd + 1, **bench(a, tree)})
    if a.record:
        mine = [r for r in runs if Path(r["tree"]) == trees[-1]]
        path = record(a.record_as, {
            **figures(mine[-1], a.p95_limit), "model_tokens_per_s": a.model_tokens_per_s,
            "runs": [{"round": r["round"], **figures(r, a.p95_limit)} for r in runs]}, notes=(
            f"one voice worker per run, {a.stt} STT, espeak-ng TTS, Silero VAD, offline demo "
            f"model paced at {a.model_tokens_per_s:g} tokens/s; caller = livekit rtc "
            "participant speaking espeak-ng; trees interleaved per round; top-level figures "
            "are the last tree's last run; all on one 2-core machine shared with other work "
            "(see machine_busy_pct, other_load_cores)"))
        print(f"recorded {path}", file=sys.stderr)
    text = orjson.dumps(runs if len(runs) > 1 else runs[0], option=orjson.OPT_INDENT_2).decode()
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
