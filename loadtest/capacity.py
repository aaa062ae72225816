"""``agentia capacity``: machines and monthly cost for N concurrent users.

The model multiplies the load you describe (users, turns per user per minute, reply length,
voice share) by per-unit costs **measured by our own benchmarks** and recorded in
``loadtest/results/<name>.json`` (``loadtest.record``), never by constants typed in here.
What no benchmark here can measure (a GPU's tokens/s, a LiveKit node's calls) is an explicit
input with a flag; prices and machine sizes come from an editable TOML table. Every figure
printed says where it came from (the result file, the flag, the setting, the price table).

It keeps four parts apart, because they scale with different things:

* **connections**: edge processes and Redis memory for sessions, proportional to users;
* **turns**: workers and Redis stream throughput, proportional to turns/s and deltas per turn;
* **model compute**: GPUs, proportional to turns/s times tokens per turn;
* **voice**: voice workers, LiveKit nodes and audio egress, proportional to calls.
"""

from __future__ import annotations

import argparse
import math
import sys
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import orjson

from agentia.settings import WorkerSettings
from agentia.settings_edge import EdgeSettings
from loadtest.capacity_figures import CapacityError, Figures, MissingResult
from loadtest.record import RESULTS, ROOT
from sessions import keys as K

PRICES = ROOT / "ops" / "capacity" / "prices.toml"
MONTH_S = 730 * 3600
GIB = 2**30


def _defaults(cls: Any) -> dict[str, Any]:
    return {f.name: f.default for f in fields(cls)}


# ------------------------------------------------------------------ the model


@dataclass(slots=True)
class Line:
    what: str
    quantity: float
    unit: str
    usd_month: float = 0.0
    note: str = ""


def load_of(a: argparse.Namespace, f: Figures) -> dict[str, float]:
    """What the users ask of the system: turns/s, deltas per turn, turn duration."""
    users = f.inp("users", "concurrent users", a.users, "--users")
    rate = f.inp("turns", "turns per user per minute", a.turns_per_user_per_min,
                 "--turns-per-user-per-min")
    tokens = f.inp("reply_tokens", "reply tokens per turn", a.reply_tokens, "--reply-tokens")
    stream = f.inp("stream_tps", "tokens/s one reply streams at", a.stream_tokens_per_s,
                   "--stream-tokens-per-s")
    ttft = f.inp("ttft", "seconds to a reply's first token", a.ttft_s, "--ttft-s")
    desc = "delta coalescing window, ms"
    coalesce = (f.setting("coalesce_ms", desc, a.coalesce_ms, "AGENTIA_COALESCE_MS")
                if a.coalesce_ms == _defaults(WorkerSettings)["coalesce_ms"]
                else f.inp("coalesce_ms", desc, a.coalesce_ms, "--coalesce-ms"))
    stream_s = tokens / stream
    deltas = max(1.0, min(tokens, math.ceil(stream_s / (coalesce / 1000))))
    return {"users": users, "turns_per_s": users * rate / 60, "reply_tokens": tokens,
            "deltas": deltas, "turn_s": ttft + stream_s,
            "reply_chars": tokens * f.inp("chars_per_token", "characters per token",
                                          a.chars_per_token, "--chars-per-token")}


def per_turn(f: Figures, who: str, tokens: float, deltas: float) -> float:
    """CPU-s per turn of ``who`` (edge or worker) for a reply of ``tokens`` stream events in
    ``deltas`` deltas, from three turns benchmarks: plain (a short reply in one delta),
    streamed (a long reply, about a delta per word) and fast-streamed (the same words, several
    per delta). Their differences give a cost per delta and a cost per streamed word."""
    if who == "worker" and (stream := _worker_stream(f)) is not None:
        return _plain_turn(f, who, f.measured("worker_turn_cpu")) + stream * tokens
    x = {k: f.measured(f"{who}_turn_cpu{k}") for k in ("", "_streamed", "_fast")}
    d = {k: f.measured(f"deltas{k}") for k in ("", "_streamed", "_fast")}
    w = {k: f.measured(f"words{k}") for k in ("", "_streamed", "_fast")}
    per_delta = _slope(x["_streamed"] - x["_fast"], d["_streamed"] - d["_fast"])
    per_word = _slope(x["_streamed"] - x[""] - per_delta * (d["_streamed"] - d[""]),
                      w["_streamed"] - w[""])
    return (_plain_turn(f, who, x[""]) + per_delta * max(0.0, deltas - d[""])
            + per_word * max(0.0, tokens - w[""]))


def _worker_stream(f: Figures) -> float | None:
    """The worker's CPU per streamed token of an OpenAI-compatible model over the lean client
    (``bench_worker --modes inflight``: the socket, the decoding, the turn's text, the pieces'
    pipelines, all of it), when recorded: it replaces the turns benchmarks' costs per delta and
    per word, which come from the demo model (an SDK event per word, no HTTP stream)."""
    try:
        return f.measured("worker_token_cpu_stream")
    except MissingResult:
        return None


def _plain_turn(f: Figures, who: str, recorded: float) -> float:
    """The plain turn's CPU: for the worker, the newest measured (``bench_worker --modes
    cpu``, the demo model's turn; its per-turn machinery changed since the turns benchmarks,
    which still give the costs per delta and per word), else the turns benchmark's."""
    if who != "worker":
        return recorded
    try:
        return f.measured("worker_turn_cpu_now")
    except MissingResult:
        return recorded


def _slope(dy: float, dx: float) -> float:
    return max(0.0, dy / dx) if dx > 0 else 0.0


def redis_turn_cpu(f: Figures, deltas: float) -> float:
    """redis-server CPU-s per turn of the bus operations alone (the Redis benchmark's fit)."""
    return f.measured("redis_turn_cpu") + deltas * f.measured("redis_delta_cpu")


def redis_calib(f: Figures) -> float:
    """How much more Redis CPU a turn costs in the whole system (edge, worker, Agents SDK
    memory, leases, heartbeats; the turns benchmarks) than the Redis benchmark's replay of the
    bus operations predicts at the same deltas; at least 1.

    The ratio compares like with like: when the turns benchmarks streamed pieces another way
    than the replay in redis-shard (they were recorded before chunks) and a replay of their
    way was recorded (redis-shard-before), that one is the denominator."""
    def replay(deltas: float) -> float:
        if f.reply_path("core-turns-w1") == f.reply_path("redis-shard") \
                or f.reply_path("redis-shard-before") != f.reply_path("core-turns-w1"):
            return redis_turn_cpu(f, deltas)
        return (f.measured("redis_turn_cpu_before")
                + deltas * f.measured("redis_delta_cpu_before"))

    ratios = [f.measured("redis_turn_cpu_full") / replay(f.measured("deltas")),
              f.measured("redis_turn_cpu_full_streamed")
              / replay(f.measured("deltas_streamed"))]
    return max(1.0, sum(ratios) / len(ratios))


def log_bytes(f: Figures, ld: dict[str, float]) -> float:
    """Bytes one turn adds to its session's log (its user, turn_start and reply events; before
    chunks, its deltas too), in a log of twenty turns."""
    return (f.measured("log_b") + ld["deltas"] * f.measured("log_b_delta")
            + ld["reply_chars"] * f.measured("log_b_char"))


def log_events(f: Figures, ld: dict[str, float]) -> float:
    """Events one turn adds to its session's log (3; before chunks, 3 + its deltas)."""
    return f.measured("log_events") + ld["deltas"] * f.measured("log_events_delta")


def delivery_entry_bytes(f: Figures, ld: dict[str, float]) -> float:
    """Bytes of one delivery stream entry, on average over a turn's (its log events and
    chunks: deltas + 3)."""
    per_turn = (f.measured("delivery_b") + ld["deltas"] * f.measured("delivery_b_delta")
                + ld["reply_chars"] * f.measured("delivery_b_char"))
    return per_turn / (ld["deltas"] + 3)


def connections(a: argparse.Namespace, f: Figures, ld: dict[str, float]) -> list[Line]:
    users, util = ld["users"], a.target_util
    connects_s = users * f.inp("connects", "connections opened per user per hour",
                               a.connects_per_user_per_hour,
                               "--connects-per-user-per-hour") / 3600
    heartbeat = f.setting("heartbeat", "client heartbeat, s",
                          _defaults(EdgeSettings)["heartbeat_s"], "AGENTIA_HEARTBEAT_S")
    conn_cores = (connects_s * f.measured("handshake_cpu")
                  + users / heartbeat * f.measured("ping_cpu")) / 1000
    turn_cores = ld["turns_per_s"] * per_turn(f, "edge", ld["reply_tokens"], ld["deltas"])
    per_proc = f.inp("conns_per_proc", "connections per edge process", a.conns_per_edge_process,
                     "--conns-per-edge-process")
    procs = math.ceil(max(users / per_proc, (conn_cores + turn_cores) / util))
    kib = f.measured("edge_rss_kib") + f.measured("slab_kib") / 2  # the server's end only
    vcpus, mem = f.price("edge_box", "vcpus"), f.price("edge_box", "mem_gib")
    boxes = math.ceil(max(procs / vcpus, users * kib * 1024 / GIB / (mem * util)))
    sessions_mem = users * a.sessions_kept_per_user * f.measured("redis_session_b")
    # with any turns at all each edge process's delivery stream fills up to DELIVERY_MAXLEN
    # and stays full (it is trimmed by length only)
    full = K.DELIVERY_MAXLEN if ld["turns_per_s"] > 0 else 0
    delivery_mem = procs * full * delivery_entry_bytes(f, ld)
    redis_mem = sessions_mem + delivery_mem
    redis_cpu = connects_s * f.measured("redis_open_cpu") / 1000
    shards = max(redis_mem / (f.price("redis_shard", "mem_gib") * GIB * util), redis_cpu / util)
    return [
        Line("edge processes", procs, "processes", note=f"{conn_cores:,.1f} cores for "
             f"handshakes+heartbeats, {turn_cores:,.1f} for turn frames; "
             f"{kib:.1f} KiB/connection"),
        Line(f"edge boxes ({vcpus:.0f} vCPU, {mem:.0f} GiB)", boxes, "boxes",
             boxes * f.price("edge_box", "usd_month")),
        Line("Redis shards: sessions, delivery streams", shards, "shards",
             note=f"{sessions_mem / GIB:,.0f} GiB of sessions, {delivery_mem / GIB:,.0f} GiB "
                  f"of delivery streams, {redis_cpu:,.2f} cores for opens"),
    ]


def turns(a: argparse.Namespace, f: Figures, ld: dict[str, float]) -> list[Line]:
    rate, deltas, util = ld["turns_per_s"], ld["deltas"], a.target_util
    redis_cores = rate * (redis_turn_cpu(f, deltas)
                          + ld["reply_chars"] * f.measured("redis_char_cpu")) * redis_calib(f)
    cmds = rate * (f.measured("redis_turn_cmds") + deltas * f.measured("redis_delta_cmds"))
    kept = ld["users"] * a.sessions_kept_per_user
    per_session = f.inp("turns_per_session", "turns kept per session", a.turns_per_session,
                        "--turns-per-session")
    in_log = min(per_session, K.LOG_MAXLEN / log_events(f, ld))
    in_mem = min(per_session, K.MEMORY_MAXLEN / 2)
    log_b = log_bytes(f, ld)
    mem_b = f.measured("mem_b") + ld["reply_chars"] * f.measured("mem_b_char")
    redis_mem = kept * (in_log * log_b + in_mem * mem_b)
    shards = max(redis_cores / util, redis_mem / (f.price("redis_shard", "mem_gib") * GIB * util))
    desc = "turns one worker process runs at once"
    conc = (f.setting("concurrency", desc, a.worker_concurrency, "AGENTIA_CONCURRENCY")
            if a.worker_concurrency == _defaults(WorkerSettings)["concurrency"]
            else f.inp("concurrency", desc, a.worker_concurrency, "--worker-concurrency"))
    cpu_procs = rate * per_turn(f, "worker", ld["reply_tokens"], deltas) / util
    conc_procs = rate * ld["turn_s"] / conc
    procs = math.ceil(max(cpu_procs, conc_procs))
    egress_gb = rate * MONTH_S * (2 * ld["reply_chars"] + (deltas + 4) * 120) / 1e9
    return [
        Line("Redis shards: turn streams (CPU, logs)", shards, "shards",
             note=f"{redis_cores:,.0f} cores (bus replay x{redis_calib(f):.2f}, the whole "
                  f"system's ratio), {cmds:,.0f} bus commands/s, "
                  f"{redis_mem / GIB:,.0f} GiB of logs and memory"),
        Line("worker processes (1 vCPU each)", procs, "vCPU",
             procs * f.price("worker_vcpu", "usd_month"),
             note=f"CPU needs {cpu_procs:,.0f}, concurrency ({conc:.0f}/process, "
                  f"{rate * ld['turn_s']:,.0f} turns in flight) needs {conc_procs:,.0f}"),
        Line("reply egress", egress_gb, "GB/month", egress_gb * f.price("egress", "usd_per_gb")),
    ]


def model(a: argparse.Namespace, f: Figures, ld: dict[str, float]) -> list[Line]:
    out_tps = ld["turns_per_s"] * ld["reply_tokens"]
    gpu_tps = f.inp("gpu_tps", "output tokens/s one GPU sustains (NOT measured here)",
                    a.tokens_per_s_per_gpu, "--tokens-per-s-per-gpu")
    gpus = out_tps / gpu_tps
    note = f"{out_tps:,.0f} output tokens/s at {gpu_tps:,.0f}/GPU"
    if a.prompt_tokens:
        prompt = f.inp("prompt_tokens", "prompt tokens per turn", a.prompt_tokens,
                       "--prompt-tokens")
        prefill = f.inp("prefill_tps", "prompt tokens/s one GPU prefills",
                        a.prefill_tokens_per_s_per_gpu, "--prefill-tokens-per-s-per-gpu")
        gpus += ld["turns_per_s"] * prompt / prefill
        note += f", {ld['turns_per_s'] * prompt:,.0f} prompt tokens/s at {prefill:,.0f}/GPU"
    n = math.ceil(gpus)
    return [Line("GPUs serving the model", n, "GPUs", n * f.price("gpu", "usd_month"), note)]


def voice(a: argparse.Namespace, f: Figures, ld: dict[str, float]) -> list[Line]:
    share = f.inp("voice_share", "share of users in a voice call", a.voice_share, "--voice-share")
    if share <= 0:
        return []
    calls = ld["users"] * share
    per_worker = f.voice_calls(a.calls_per_voice_worker)
    workers = math.ceil(calls / per_worker)
    per_sfu = f.inp("sfu_calls", "calls per LiveKit node (NOT measured here; see "
                    "docs/capacity.md)", a.calls_per_sfu_node, "--calls-per-sfu-node")
    sfus = math.ceil(calls / per_sfu)
    kbps = f.inp("audio_kbps", "agent audio to a caller, kbit/s", a.audio_kbps, "--audio-kbps")
    gb = calls * kbps * 1000 / 8 * MONTH_S / 1e9
    return [
        Line(f"voice workers ({f.price('voice_worker', 'vcpus'):.0f} vCPU each)", workers,
             "workers", workers * f.price("voice_worker", "usd_month"),
             f"{calls:,.0f} calls at {per_worker:g} per worker"),
        Line("LiveKit nodes", sfus, "nodes", sfus * f.price("sfu_node", "usd_month"),
             f"{per_sfu:,.0f} calls per node"),
        Line("audio egress", gb, "GB/month", gb * f.price("egress", "usd_per_gb")),
    ]


def _redis_cost(parts: dict[str, list[Line]], f: Figures) -> None:
    """Shards of both parts are summed, then rounded up once, and priced with replicas."""
    lines = [ln for part in ("connections", "turns") for ln in parts[part]
             if ln.what.startswith("Redis shards")]
    total = math.ceil(sum(ln.quantity for ln in lines))
    per = f.price("redis_shard", "usd_month") * (1 + f.price("redis_shard", "replicas"))
    for ln in lines:
        share = ln.quantity / sum(x.quantity for x in lines) if total else 0.0
        ln.usd_month = total * share * per
        ln.quantity = round(ln.quantity, 2)


POSITIVE = ("tokens_per_s_per_gpu", "prefill_tokens_per_s_per_gpu", "stream_tokens_per_s",
            "chars_per_token", "conns_per_edge_process", "worker_concurrency", "coalesce_ms",
            "calls_per_sfu_node")
NOT_NEGATIVE = ("users", "turns_per_user_per_min", "reply_tokens", "prompt_tokens", "ttft_s",
                "connects_per_user_per_hour", "sessions_kept_per_user", "turns_per_session",
                "audio_kbps")


def check(a: argparse.Namespace) -> None:
    """Inputs the formulas divide by must be positive; shares between 0 and 1."""
    bad = [n for n in POSITIVE if not getattr(a, n) > 0]
    bad += [n for n in NOT_NEGATIVE if not getattr(a, n) >= 0]
    if not 0 <= a.voice_share <= 1:
        bad.append("voice_share (0 to 1)")
    if not 0 < a.target_util <= 1:
        bad.append("target_util (above 0, at most 1)")
    if a.calls_per_voice_worker is not None and not a.calls_per_voice_worker > 0:
        bad.append("calls_per_voice_worker")
    if bad:
        raise CapacityError("invalid input: " + ", ".join("--" + b.replace("_", "-")
                                                          for b in bad))


def compute(a: argparse.Namespace) -> dict[str, Any]:
    check(a)
    prices_path = Path(a.prices)
    try:
        prices = tomllib.loads(prices_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CapacityError(f"cannot read the price table {prices_path}: {exc}") from None
    f = Figures(Path(a.results_dir), prices, prices_path)
    ld = load_of(a, f)
    parts = {"connections": connections(a, f, ld), "turns": turns(a, f, ld),
             "model": model(a, f, ld), "voice": voice(a, f, ld)}
    _redis_cost(parts, f)
    cost = {k: sum(ln.usd_month for ln in v) for k, v in parts.items()}
    return {
        "load": ld,
        "parts": {k: [_line(ln) for ln in v] for k, v in parts.items()},
        "usd_month": cost, "total_usd_month": sum(cost.values()),
        "figures": {k: {"label": x.label, "value": x.value, "kind": x.kind, "where": x.where}
                    for k, x in f.used.items()},
    }


def _line(ln: Line) -> dict[str, Any]:
    return {"what": ln.what, "quantity": ln.quantity, "unit": ln.unit,
            "usd_month": round(ln.usd_month), "note": ln.note}


# ------------------------------------------------------------------ output and CLI

TITLES = {"connections": "CONNECTIONS (edges; Redis for sessions and delivery registration)",
          "turns": "TURNS (workers; Redis streams, logs and memory)",
          "model": "MODEL COMPUTE", "voice": "VOICE (LiveKit nodes, voice workers)"}


def render(res: dict[str, Any]) -> str:
    ld = res["load"]
    out = [f"{ld['users']:,.0f} concurrent users: {ld['turns_per_s']:,.0f} turns/s, "
           f"{ld['reply_tokens']:,.0f}-token replies in {ld['deltas']:,.0f} deltas over "
           f"{ld['turn_s']:.1f} s", ""]
    for part, lines in res["parts"].items():
        if not lines:
            continue
        out.append(f"{TITLES[part]:<66}{'$/month':>12}")
        for ln in lines:
            q = f"{ln['quantity']:,.2f}".rstrip("0").rstrip(".")
            cost = f"{ln['usd_month']:,.0f}" if ln["usd_month"] else ""
            out.append(f"  {ln['what']:<44}{q:>12} {ln['unit']:<8}{cost:>12}")
            if ln["note"]:
                out.append(f"      {ln['note']}")
        out.append(f"  {'subtotal':<65}{res['usd_month'][part]:>12,.0f}")
        out.append("")
    out.append(f"{'TOTAL':<66}{res['total_usd_month']:>12,.0f}")
    out += ["", "Figures used (measured = a recorded benchmark result on this project's machine):"]
    for x in res["figures"].values():
        out.append(f"  {x['label']:<62} {x['value']:>12,.6g}  {x['kind']}: {x['where']}")
    return "\n".join(line.rstrip() for line in out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add = p.add_argument
    add("--users", type=float, default=10_000_000, help="concurrent users (connections)")
    add("--turns-per-user-per-min", type=float, default=1.0)
    add("--reply-tokens", type=float, default=300.0, help="output tokens per reply")
    add("--voice-share", type=float, default=0.0, help="share of users in a voice call (0-1)")
    add("--tokens-per-s-per-gpu", type=float, default=2500.0,
        help="output tokens/s one GPU sustains for your model (an input, not measured here)")
    add("--prompt-tokens", type=float, default=0.0, help="prompt tokens per turn (0: ignore)")
    add("--prefill-tokens-per-s-per-gpu", type=float, default=20000.0)
    add("--stream-tokens-per-s", type=float, default=50.0, help="speed of one reply's stream")
    add("--ttft-s", type=float, default=0.5, help="seconds to a reply's first token")
    add("--chars-per-token", type=float, default=4.0)
    add("--connects-per-user-per-hour", type=float, default=2.0)
    add("--conns-per-edge-process", type=float, default=19_000.0,
        help="default: a 20,000-fd limit minus the edge's reserve of 1,000")
    add("--sessions-kept-per-user", type=float, default=1.0,
        help="sessions each user keeps in Redis (they expire after a week idle)")
    add("--turns-per-session", type=float, default=20.0,
        help="turns a session's log and memory hold (capped by LOG_MAXLEN, MEMORY_MAXLEN)")
    add("--worker-concurrency", type=float, default=_defaults(WorkerSettings)["concurrency"],
        help="turns one worker runs at once (AGENTIA_CONCURRENCY)")
    add("--coalesce-ms", type=float, default=_defaults(WorkerSettings)["coalesce_ms"],
        help="delta coalescing window (AGENTIA_COALESCE_MS)")
    add("--calls-per-voice-worker", type=float, default=None,
        help="used only when no voice benchmark result is recorded")
    add("--calls-per-sfu-node", type=float, default=1500.0)
    add("--audio-kbps", type=float, default=32.0)
    add("--target-util", type=float, default=0.7, help="CPU and memory kept below this share")
    add("--prices", default=str(PRICES), help="price table (TOML)")
    add("--results-dir", default=str(RESULTS), help="recorded benchmark results")
    add("--json", action="store_true", help="print JSON instead of the table")


def run(a: argparse.Namespace) -> int:
    try:
        res = compute(a)
    except CapacityError as exc:
        print(f"agentia capacity: {exc}", file=sys.stderr)
        return 2
    if a.json:
        print(orjson.dumps(res, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(res))
    return 0
