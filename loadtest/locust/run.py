"""Run a Locust scenario against a private Agentia: Redis, ``agentia gateway --processes E``
(SO_REUSEPORT edge processes), agent workers for chat, and Locust distributed over K worker
processes, headless. Everything is on loopback, bounded in count and time, and stopped by PID.

    python -m loadtest.locust.run storm --connections 20000 --edges 2 --hold 60
    python -m loadtest.locust.run chat --users 50 --rate 20 --seconds 60 --edges 2 --workers 1

Output in ``test-output/locust/<scenario>-<timestamp>/`` (or ``--out``): Locust's CSV files and
HTML report, ``samples.csv`` (edge RSS/CPU/fds, Locust and Redis RSS, twice a second),
``summary.json`` and the PNG plots (``results.py``); logs of every process. Locust itself runs in
its own processes (it monkey-patches the standard library with gevent): this module never
imports it. The run's shape from its arguments is ``plan.py``, the Agentia processes
``procs.py``, the sampling from outside ``sampler.py``; here they are put together.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from launch.redis_server import RedisServer, free_port
from loadtest.locust import results, trees
from loadtest.locust.driver import Driver, in_netns
from loadtest.locust.plan import environment, plan
from loadtest.locust.procs import Agentia
from loadtest.locust.sampler import Sampler, children, gauge

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_locust(out: Path, locustfile: str, host: str, processes: int, extra: list[str],
               sampler: Sampler, timeout: float) -> int:
    port = free_port()
    cmd = [sys.executable, "-m", "locust", "-f", str(HERE / locustfile), "--headless",
           "-H", host, "--processes", str(processes),
           "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
           "--master-host", "127.0.0.1", "--master-port", str(port),
           "--csv", str(out / "locust"), "--csv-full-history", "--html", str(out / "report.html"),
           "--loglevel", "INFO", "--logfile", str(out / "locust.log"), "--only-summary", *extra]
    (out / "locust.cmd").write_text(" ".join(cmd) + "\n")
    log(f"locust: {processes} worker process(es), output in {out}")
    with (out / "locust.out").open("wb") as console:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=console, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        sampler.locust_pid = proc.pid
        kids: set[int] = set()
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            kids.update(children(proc.pid))
            time.sleep(0.5)
        if proc.poll() is None:
            log(f"locust still running after {timeout:.0f} s: stopping it")
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for pid in kids:  # forked workers, by PID, if any outlived the master
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if Path(f"/proc/{pid}").exists() and b"locust" in Path(
                        f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
        return int(proc.returncode)


def scenario(a: argparse.Namespace) -> dict[str, Any]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(a.out) if a.out else ROOT / "test-output" / "locust" / f"{a.scenario}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "scenario": a.scenario, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "edges": a.edges, "command": " ".join(["python -m loadtest.locust.run", *sys.argv[1:]])}
    shape = plan(a, out)
    meta.update(shape.meta)
    target, processes = shape.target, shape.processes
    env = environment(a, os.environ)
    meta["env"] = a.env
    tree = Path(a.tree[0]).resolve() if a.tree else ROOT
    meta.update(tree=str(tree), commit=trees.commit(tree))
    started: list[Agentia] = []
    with tempfile.TemporaryDirectory(prefix="agentia-locust-") as tmp:
        redis = RedisServer(Path(tmp) / "redis", appendonly=a.scenario == "chat").start()
        metrics_dir = Path(tmp) / "metrics"
        metrics_dir.mkdir()
        probe = out / "gc" if a.gc_probe else None
        if probe is not None:
            probe.mkdir(exist_ok=True)
        try:
            env["AGENTIA_REDIS_URL"] = redis.url
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
            gw = start_gateway(a, {**env, **trees.tree_env(tree, probe)}, tree, out)
            started.append(gw)
            port = int(gw.info["port"])
            log(f"gateway on port {port}, edge pids {gw.pids}; redis pid "
                f"{redis.proc.pid if redis.proc else '?'}")
            if a.scenario == "chat":
                for i in range(a.workers):
                    started.append(Agentia(["worker"], env, "AGENTIA_WORKER_READY",
                                           out / f"worker-{i}.log"))
            meta["edge_pids"] = list(gw.pids)
            assert redis.proc is not None
            sampler = Sampler(out / "samples.csv", gw, redis.proc.pid, metrics_dir)
            time.sleep(1.0)  # let the edges settle before the baseline sample
            sampler.start()
            if probe is not None and target:
                trees.Snapshot(gw.pids, lambda pid: gauge(metrics_dir, pid), target).start()
            time.sleep(1.0)
            t0 = meta["locust_started"] = round(time.time(), 3)
            ticks = trees.cpu_ticks()
            (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
            driver = None
            if a.scenario in ("reconnect", "slow"):
                for old in [out / "phase", *out.glob("lineages-*.jsonl")]:
                    old.unlink(missing_ok=True)
                driver = Driver(a, out, target, processes, gw.pids, redis.url, metrics_dir,
                                lambda pid: gauge(metrics_dir, pid))
                driver.start()
            meta["locust_exit_code"] = run_locust(out, f"{a.scenario}.py",
                                                  f"ws://127.0.0.1:{port}", processes,
                                                  shape.extra, sampler, shape.timeout)
            meta["locust_wall_s"] = round(time.time() - t0, 1)
            meta["box_idle_share"] = trees.idle_share(ticks, trees.cpu_ticks())
            if driver is not None:
                driver.aborted.set()
                driver.join(30)
                meta["stream"] = driver.result
            time.sleep(1.0)
            sampler.stopping.set()
            sampler.join(5)
            meta["edge_restarts"] = gw.restarts
            (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        finally:
            for p in reversed(started):
                p.stop()
            redis.stop()
    return sum_up(out, meta, a.scenario, probe)


def start_gateway(a: argparse.Namespace, env: dict[str, str], tree: Path, out: Path) -> Agentia:
    """``agentia gateway --processes E`` from the checkout ``tree``, on a free port."""
    ready = "AGENTIA_GATEWAY_READY" if a.edges > 1 else "AGENTIA_EDGE_READY"
    return Agentia(["gateway", "--port", "0", "--processes", str(a.edges)], env, ready,
                   out / "gateway.log", cwd=tree)


def sum_up(out: Path, meta: dict[str, Any], scenario: str,
           probe: Path | None) -> dict[str, Any]:
    """``summary.json`` and the plots from what the run left in ``out``."""
    try:
        summary = results.summarize(out, meta)
    except Exception as exc:  # keep what was measured even if the analysis trips
        log(f"could not sum the run up: {exc!r}")
        summary = {**meta, "analysis_error": repr(exc)}
    try:
        summary["plots"] = [p.name for p in results.plot(out, scenario)]
    except Exception as exc:
        log(f"could not plot the run: {exc!r}")
    if probe is not None:
        start = meta.get("locust_started", 0.0)
        summary["gc"] = trees.gc_pauses(probe, meta.get("edge_pids", []),
                                        (start, start + meta.get("locust_wall_s", 1e9)))
    summary["out"] = str(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="scenario", required=True)
    s = sub.add_parser("storm", help="open N connections, hold them, stop")
    s.add_argument("--hold", type=float, default=60.0, help="seconds held after the ramp")
    r = sub.add_parser("reconnect", help="kill an edge process under load: every client "
                       "resumes; lost and duplicated events counted against Redis")
    r.add_argument("--kill-after", type=float, default=10.0,
                   help="seconds of steady events before the kill")
    r.add_argument("--after-kill", type=float, default=20.0,
                   help="seconds of events after the kill (also the wait for reconnections)")
    r.add_argument("--kill-edge", type=int, default=0, help="which edge process (index)")
    w = sub.add_parser("slow", help="a fraction of the clients stop reading; the edge closes "
                       "them 4000 SLOW, the others keep their latency")
    w.add_argument("--slow-fraction", type=float, default=0.1)
    w.add_argument("--slow-rcvbuf", type=int, default=4096,
                   help="SO_RCVBUF of the slow clients' sockets, bytes")
    w.add_argument("--before", type=float, default=15.0,
                   help="seconds of events before the slow readers stop reading")
    w.add_argument("--slow-seconds", type=float, default=30.0,
                   help="seconds of events while they do not read")
    w.add_argument("--netns-wmem", type=int, default=0, metavar="BYTES",
                   help="run in a new network namespace whose TCP send buffers stop at BYTES "
                        "(root; see in_netns)")
    for q in (s, r, w):
        q.add_argument("--connections", type=int, default=20_000 if q is s else 2000)
        q.add_argument("--rate", type=float, default=1000.0,
                       help="handshakes started per second")
        q.add_argument("--batch", type=int, default=500, help="connections per Locust User")
        q.add_argument("--inflight", type=int, default=50,
                       help="handshakes in flight per User")
    for q in (r, w):
        q.add_argument("--sessions", type=int, default=200,
                       help="sessions the connections share (one user each)")
        q.add_argument("--event-rate", type=float, default=200.0,
                       help="events appended per second, round-robin over the sessions")
        q.add_argument("--event-bytes", type=int, default=200, help="padding per event")
        q.add_argument("--jitter", type=float, default=1.0,
                       help="a dropped client waits up to this many s before reconnecting")
        q.add_argument("--settle", type=float, default=3.0,
                       help="seconds between the last event and the report")
    c = sub.add_parser("chat", help="a steady rate of chat turns")
    c.add_argument("--users", type=int, default=50, help="connections sending turns")
    c.add_argument("--rate", type=float, default=10.0, help="turns per second in all")
    c.add_argument("--seconds", type=float, default=30.0, help="how long turns are sent")
    c.add_argument("--turns", type=int, default=0, help="stop after this many turns (0: no cap)")
    c.add_argument("--workers", type=int, default=1, help="agent worker processes")
    c.add_argument("--turn-timeout", type=float, default=30.0)
    for q in (s, c, r, w):
        q.add_argument("--edges", type=int, default=2, help="edge processes (SO_REUSEPORT)")
        q.add_argument("--locust-processes", type=int, default=0,
                       help="Locust worker processes (default: one per 10,000 connections)")
        q.add_argument("--heartbeat", type=float, default=20.0, help="client ping interval, s")
        q.add_argument("--word-delay", type=float, default=0.02,
                       help="demo model: seconds between streamed words")
        q.add_argument("--out", help="output directory (default test-output/locust/...)")
        q.add_argument("--env", action="append", default=[], metavar="AGENTIA_X=V",
                       help="environment of the gateway and workers (repeatable)")
        q.add_argument("--record", metavar="NAME",
                       help="also write loadtest/results/NAME.json (loadtest.record)")
        q.add_argument("--tree", action="append", default=[], metavar="PATH",
                       help="run the gateway from this checkout (repeatable: one run each, "
                            "in order, same client; default this checkout)")
        q.add_argument("--gc-probe", action="store_true",
                       help="time every edge garbage collection from outside (trees.py)")
        q.add_argument("--locust-args", default="",
                       help="more Locust arguments, e.g. \"--ws-token-in query\"")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    a = parser().parse_args(argv)
    if getattr(a, "netns_wmem", 0) and not os.environ.get("AGENTIA_LOAD_IN_NETNS"):
        raise SystemExit(in_netns(a, argv))
    for i, tree in enumerate(a.tree or [None]):
        one = argparse.Namespace(**vars(a))
        one.tree = [tree] if tree else []
        label = f"{i}-{Path(tree or '.').resolve().name}"
        if a.out and len(a.tree) > 1:
            one.out = str(Path(a.out) / label)
        summary = scenario(one)
        if a.record:
            name = a.record if len(a.tree) < 2 else f"{a.record}-{label}"
            log(f"recorded in {record_summary(name, summary)}")
        print(json.dumps(summary, indent=2))


def record_summary(name: str, summary: dict[str, Any]) -> Path:
    """``loadtest/results/<name>.json`` (loadtest.record) from a run's summary."""
    from loadtest.record import record

    figures = {k: v for k, v in summary.items() if k not in ("out", "plots", "command")}
    return record(name, figures, command=summary.get("command"),
                  notes="Locust suite (docs/benchmarks-locust.md); shared 2-core machine, the "
                        "load generator on the same cores")


if __name__ == "__main__":
    main()
