"""Voice benchmark: end of the caller's speech -> first agent audio, through a real LiveKit server.

Starts its own Redis, LiveKit server, edge, agent worker (offline demo model) and ONE voice
worker (``python -m launch.cli voice``: the worker and the job processes it forks), then:

* ``latency``: N sequential calls. Each is a fresh room started the way the control plane
  starts it (:func:`voice.routes.open_call`: session opened on the bus, worker dispatched,
  room token); a ``livekit`` participant (:class:`voice.caller.Caller`) joins, waits until
  the agent is listening, speaks one free sentence (espeak-ng, in real time, 20 ms frames) and
  records end of speech -> first non-silent frame of the agent's audio. **End of speech** is
  when the sound ends: the moment the sentence's last sample leaves the caller's microphone
  (its ``rtc.AudioSource``: the capture time of the last frame with speech, plus the audio
  LiveKit counts queued ahead of it, plus that frame's speech; ``Caller.sound_ended_at``).
  Until session 17 it was the end of the real-time slot in which that frame was *queued*
  (``Caller.spoken_at``); the same answers timed that way are kept beside the figures as
  ``p50_from_queued``/``p95_from_queued``, comparable with older records.
* ``capacity``: K concurrent calls for K in ``--levels``; all K join, then all speak their
  first sentence at once (3 per call, each after the agent finished the previous answer; only
  the sentences the latency phase got answers to; at least 8 per level): the worst case, every
  call's decoding at the same moment. ``--starts independent`` instead starts each caller's
  first sentence after a random delay in [0, ``--spread-s``] (8 s, about one phrase-and-answer
  cycle; seeded by ``--seed``, the delays recorded with the level), as independent callers
  would; ``--starts both`` runs each level both ways, the worst case first (it alone decides
  whether to go on to the next level) and the independent callers beside it
  (``max_k_p95_within_limit_independent``). The most calls whose p95
  stays under ``--p95-limit`` ms is the worker's capacity; it stops after a level whose p95
  exceeds twice that (or ``--stop-p95``), or where a call fails (cannot join, or more than a
  third of the sentences go unanswered). The voice worker's process tree (worker + job
  processes) CPU, RSS and PSS are read from /proc during each level, with the LiveKit server's
  CPU, this client's CPU and the machine's idle time (the rest is foreign load).

The agent worker runs the demo model paced at ``--model-tokens-per-s`` (60). ``--tree``
(repeatable) runs the stack (edge, agent worker, voice worker) from other checkouts,
``--rounds`` times each, interleaved (the order reversed every other round): before and after
side by side, in the same machine state. Each phase also records where the time went
(``stages``: the voice worker's logged turn timings, :mod:`loadtest.voice_stages`;
``decodes``: each utterance's wait for an engine and its decoding; ``uplink_jitter_buffer``:
each call's WebRTC jitter buffer on its caller's audio, as the worker logs them) and each
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
import datetime as dt
import signal
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from agentia.settings import from_env
from loadtest.record import record
from loadtest.voice_calls import Bench
from loadtest.voice_figures import figures
from loadtest.voice_phases import SEED, SPREAD_S, STARTS, Starts, capacity, latency, stt_alone
from loadtest.voice_proc import tree_memory
from loadtest.voice_stack import ROOT, commit, machine, overrides, stack
from loadtest.voice_stages import (
    decodes,
    log_size,
    path,
    recogniser_counts,
    stages,
    turn_ends,
    uplink_jitter,
)
from sessions.bus import Bus, connect
from voice.caller import speech_48k
from voice.settings import VoiceSettings

TARGET_P50_MS = 600.0
P95_LIMIT_MS = 900.0
"""Capacity: the most concurrent calls whose end-of-speech -> first-audio p95 stays under it."""
TOKENS_PER_WORD = 4 / 3
"""English text is ~0.75 words a token (OpenAI's rule of thumb): the demo model, which streams
a word at a time, is paced at ``tokens/s / TOKENS_PER_WORD`` words a second."""
SENTENCES = (
    "tell me about the weather in paris tomorrow", "what time is it", "tell me a story",
    "how are you today", "thank you very much", "i would like to change my password",
    "where is the nearest train station", "good morning", "stop",
)
"""Free sentences (no grammar): espeak-ng at 170 wpm, each transcribed exactly by Whisper
tiny.en when fed directly (the latency phase reports what it heard through the room)."""


async def measure(a: argparse.Namespace, env: dict[str, str], voice_pid: int,
                  livekit_pid: int, ours: list[int], t_start: float,
                  log: Path, roles: dict[str, int] | None = None) -> dict[str, Any]:
    """The STT alone, then the latency and capacity phases against the started stack."""
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
            out["latency"]["decodes"] = decodes(log, at)
            out["latency"]["path"] = path(log, at, out["latency"].pop("answers"))
            print(f"  latency {orjson.dumps(out['latency']).decode()}", file=sys.stderr,
                  flush=True)
        if a.levels:
            out["capacity"] = await capacity(b, a.levels, a.phrases_per_call, a.p95_limit,
                                             a.stop_p95 or 2 * a.p95_limit,
                                             voice_pid, livekit_pid, ours, deadline, log,
                                             a.idle_s, roles, a.starts)
        await asyncio.sleep(2)  # the last calls' recognisers log their counts as they close
        if "latency" in out:
            out["latency"]["uplink_jitter_buffer"] = uplink_jitter(
                log, set(out["latency"].pop("sessions")))
        out["recogniser"] = recogniser_counts(log)
        out["turn_ends"] = turn_ends(log)
        return out
    finally:
        await bus.close()


def bench(a: argparse.Namespace, tree: Path = ROOT) -> dict[str, Any]:
    """One run: ``tree``'s stack started, both phases measured, the stack stopped."""
    t_start = time.monotonic()
    started = dt.datetime.now(dt.UTC)
    with stack(a, tree) as st:
        results = asyncio.run(asyncio.wait_for(
            measure(a, st.env, st.voice_pid, st.livekit_pid, st.ours, t_start,
                    st.work / "voice.log", st.roles),
            max(30.0, a.budget - (time.monotonic() - t_start) - 20)))
    work = st.work
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
                  "target_p50_ms": TARGET_P50_MS,
                  "capacity_starts": {"modes": list(a.starts.modes),
                                      "spread_s": a.starts.spread_s, "seed": a.starts.seed}},
        **results,
        "latency_p50_meets_target": (results.get("latency", {}).get("p50_ms", 1e9)
                                     <= TARGET_P50_MS) if "latency" in results else None,
        "wall_s": round(time.monotonic() - t_start, 1),
        "voice_log_has_traceback": tracebacks, "logs": str(work),
    }


def _terminate(_sig: int, _frame: Any) -> None:
    raise SystemExit("terminated")  # the finally blocks stop every child by PID


def parser() -> argparse.ArgumentParser:
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
    _stack_options(p)
    _phase_options(p)
    return p


def _stack_options(p: argparse.ArgumentParser) -> None:
    """The stack's settings, and which trees run it."""
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


def _phase_options(p: argparse.ArgumentParser) -> None:
    """The phases' bounds and timeouts, and where the JSON goes."""
    p.add_argument("--stop-p95", type=float, default=0.0,
                   help="capacity: no further level after one whose p95 (ms) exceeds this "
                        "(default: twice --p95-limit)")
    p.add_argument("--stt-rounds", type=int, default=3,
                   help="times each sentence is transcribed by the STT alone, before the calls")
    p.add_argument("--idle-s", type=float, default=10.0,
                   help="capacity: seconds of each level's calls joined and silent, before "
                        "they speak, whose CPU is recorded as the level's ``idle`` (the "
                        "per-frame path alone; 0: skip)")
    p.add_argument("--starts", choices=(*STARTS, "both"), default="together",
                   help="capacity: every caller's first sentence at once (together: the worst "
                        "case), each after a random delay (independent), or each level both "
                        "ways")
    p.add_argument("--spread-s", type=float, default=SPREAD_S,
                   help="--starts independent: the first sentences' delays are uniform in "
                        "[0, this] seconds")
    p.add_argument("--seed", type=int, default=SEED,
                   help="--starts independent: the delays' seed (level K draws from "
                        "random.Random(seed * 1000 + K); recorded)")
    p.add_argument("--join-timeout", type=float, default=40.0)
    p.add_argument("--answer-timeout", type=float, default=10.0,
                   help="seconds from end of speech to the agent's first audio before the "
                        "phrase counts as unanswered")
    p.add_argument("--budget", type=float, default=570.0, help="seconds for each run")
    p.add_argument("--out", help="also write the JSON here")


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    p = parser()
    a = p.parse_args()
    a.levels = [int(x) for x in a.levels.split(",") if x.strip()]
    if not 0 <= a.spread_s <= 60:
        p.error("--spread-s: seconds in [0, 60]")
    a.starts = Starts(STARTS if a.starts == "both" else (a.starts,), a.spread_s, a.seed)
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
        _record(a, runs, trees)
    text = orjson.dumps(runs if len(runs) > 1 else runs[0], option=orjson.OPT_INDENT_2).decode()
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


def _record(a: argparse.Namespace, runs: list[dict[str, Any]], trees: list[Path]) -> None:
    """``--record``: the last tree's last run at the top, every run's figures below."""
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


if __name__ == "__main__":
    main()
