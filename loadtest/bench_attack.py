"""Attack benchmark (issue 10): what each attack class costs an edge, measured from outside.

For every checkout (``--tree``, repeatable: e.g. a pre-fix worktree and main side by side),
transport and attack, a fresh edge process of that checkout is started on a private Redis with
its default limits; ``--conns`` attacking connections run the attack for ``--seconds``; then,
while they are still connected:

* RSS growth per attacking connection (peak RSS during the attack minus RSS before, / conns);
* edge CPU per attacking frame (CPU-s of the edge process over the window / frames written)
  and the share of one core per attacking connection;
* log lines (and tracebacks) the edge wrote during the attack;
* how the edge answered: close codes, refused handshakes, resets;
* for ``many_sessions``: Redis memory per session created.

    python -m loadtest.bench_attack --tree /work/wt/base --tree . --transport both

Results go to ``loadtest/results/attack.json`` (``--name``) through loadtest/record.py.
Attack classes: loadtest/attack/attacks.py; method and tables: docs/benchmarks-attack.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from launch.redis_server import RedisServer
from loadtest.attack.attacks import ATTACKS, Attack, Ctx, _used_memory
from loadtest.attack.edgeproc import EdgeProc, tree_commit
from loadtest.record import record
from sessions.bus import Bus, connect

SECRET = "bench-attack-" + secrets.token_hex(24)  # not the public default: fixed edges refuse it
# An edge of every checkout keeps its default limits; these only say where Redis is and how
# tokens are signed.
EDGE_ENV = {"AGENTIA_JWT_SECRET": SECRET, "AGENTIA_SHARDS": "4", "AGENTIA_LOG_LEVEL": "info"}


async def _sample_peak(edge: EdgeProc, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], edge.rss_kib())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def run_one(tree: Path, transport: str, attack: Attack, redis_url: str, conns: int,
                  seconds: float, logs: Path) -> dict[str, Any]:
    prefix = f"atk{uuid.uuid4().hex[:8]}"
    edge = EdgeProc(tree, {**EDGE_ENV, "AGENTIA_REDIS_URL": redis_url,
                           "AGENTIA_REDIS_PREFIX": prefix, "AGENTIA_TRANSPORT": transport},
                    logs / f"{tree.name}-{transport}-{attack.name}.log")
    bus = Bus(connect(redis_url), prefix=prefix, shards=4)
    ctx = Ctx(edge.port, SECRET, bus)
    try:
        await attack.prepare(ctx, conns)
        await asyncio.sleep(0.5)  # let the edge settle after start
        rss0, cpu0, (lines0, bytes0, tb0) = edge.rss_kib(), edge.cpu_s(), edge.log_lines()
        stop, peak = asyncio.Event(), [rss0]
        sampler = asyncio.create_task(_sample_peak(edge, stop, peak))
        start = time.monotonic()
        deadline = start + seconds
        await asyncio.wait_for(
            asyncio.gather(*(attack.one(ctx, i, deadline) for i in range(conns))), seconds + 30)
        elapsed = time.monotonic() - start
        cpu1, rss_held = edge.cpu_s(), edge.rss_kib()
        stop.set()
        await sampler
        lines1, bytes1, tb1 = edge.log_lines()
        held = sum(1 for w in ctx.wires if not w.writer.is_closing())
        for w in ctx.wires:
            w.abort()
        redis_growth = None
        if "redis_before" in ctx.extra:
            await asyncio.sleep(1.0)  # the edge writes users' session lists every 0.5 s
            redis_growth = await _used_memory(bus) - ctx.extra["redis_before"]
        cpu = cpu1 - cpu0
        fig: dict[str, Any] = {
            "tree": str(tree), "commit": tree_commit(tree), "transport": transport,
            "attack": attack.name, "what": attack.what, "conns": conns,
            "seconds": round(elapsed, 2), "frames": ctx.frames, "connects": ctx.connects,
            "held_at_end": held,
            "rss_before_mib": round(rss0 / 1024, 1), "rss_peak_mib": round(peak[0] / 1024, 1),
            "rss_held_mib": round(rss_held / 1024, 1),
            "rss_growth_kib_per_conn": round((peak[0] - rss0) / conns, 1),
            "cpu_s": round(cpu, 2),
            "cpu_us_per_frame": round(cpu / ctx.frames * 1e6, 1) if ctx.frames else None,
            "core_share_per_conn": round(cpu / elapsed / conns, 3),
            "log_lines": lines1 - lines0, "log_bytes": bytes1 - bytes0,
            "tracebacks": tb1 - tb0,
            "closes": dict(ctx.closes), "refused": dict(ctx.refused),
        }
        if redis_growth is not None:
            fig["redis_kib_per_session"] = round(redis_growth / 1024 / max(1, ctx.frames), 2)
        return fig
    finally:
        edge.stop()
        await bus.close()


def _row(f: dict[str, Any]) -> str:
    return (f"{Path(f['tree']).name:>10} {f['transport']:>10} {f['attack']:>15} "
            f"{f['frames']:>9} {f['rss_growth_kib_per_conn']:>10} "
            f"{f['cpu_us_per_frame'] or 0:>9} {f['core_share_per_conn']:>6} "
            f"{f['log_lines']:>7} {f['tracebacks']:>4} {f['closes']} {f['refused']}"
            + (f" redis {f['redis_kib_per_session']} KiB/session"
               if "redis_kib_per_session" in f else ""))


async def main_async(a: argparse.Namespace) -> list[dict[str, Any]]:
    trees: list[Path] = a.tree
    transports = ["picows", "websockets"] if a.transport == "both" else [a.transport]
    names = a.attacks.split(",") if a.attacks else list(ATTACKS)
    logs = Path(tempfile.mkdtemp(prefix="bench-attack-"))
    redis = RedisServer(logs / "redis").start()
    runs: list[dict[str, Any]] = []
    print(f"{'tree':>10} {'transport':>10} {'attack':>15} {'frames':>9} {'KiB/conn':>10} "
          f"{'us/frame':>9} {'core':>6} {'log':>7} {'tb':>4} closes refused   (logs: {logs})")
    try:
        for name in names:
            conns = a.conns if name != "many_sessions" else min(a.conns, 4)
            for transport in transports:
                for tree in trees:
                    fig = await run_one(tree, transport, ATTACKS[name](), redis.url, conns,
                                        a.seconds, logs)
                    runs.append(fig)
                    print(_row(fig), flush=True)
    finally:
        redis.stop()
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", action="append", default=[],
                   help="a checkout whose edge to attack (repeatable; default: this one)")
    p.add_argument("--transport", choices=("picows", "websockets", "both"), default="both")
    p.add_argument("--attacks", default="", help=f"comma-separated, of: {', '.join(ATTACKS)}")
    p.add_argument("--conns", type=int, default=10, help="attacking connections (<= 100)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each attack")
    p.add_argument("--name", default="attack", help="result file loadtest/results/<name>.json")
    p.add_argument("--notes", default="")
    a = p.parse_args()
    if not 1 <= a.conns <= 100 or not 0 < a.seconds <= 60:
        p.error("--conns must be 1-100 (the per-user cap) and --seconds at most 60")
    a.tree = [Path(t).resolve() for t in a.tree] or [Path(__file__).resolve().parent.parent]
    runs = asyncio.run(main_async(a))
    print("recorded", record(a.name, {"runs": runs, "conns": a.conns, "seconds": a.seconds},
                             notes=a.notes))


if __name__ == "__main__":
    main()
