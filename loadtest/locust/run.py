"""Run a Locust scenario against a private Agentia: Redis, ``agentia gateway --processes E``
(SO_REUSEPORT edge processes), agent workers for chat, and Locust distributed over K worker
processes, headless. Everything is on loopback, bounded in count and time, and stopped by PID.

    python -m loadtest.locust.run storm --connections 20000 --edges 2 --hold 60
    python -m loadtest.locust.run chat --users 50 --rate 20 --seconds 60 --edges 2 --workers 1

Output in ``test-output/locust/<scenario>-<timestamp>/`` (or ``--out``): Locust's CSV files and
HTML report, ``samples.csv`` (edge RSS/CPU/fds, Locust and Redis RSS, twice a second),
``summary.json`` and the PNG plots (``results.py``); logs of every process. Locust itself runs in
its own processes (it monkey-patches the standard library with gevent): this module never
imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from agentia.supervise import spawn, stop_all
from launch.redis_server import RedisServer, free_port
from loadtest.bench_core import cpu_s, rss_kib, slab_kib
from loadtest.locust import results, trees
from loadtest.locust.driver import Driver, in_netns, stream_meta, stream_seconds

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MAX_SOCKETS_PER_LOCUST_PROCESS = 15_000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Agentia:
    """One ``agentia`` subcommand: stdout read until its READY line, then copied to its log
    (and watched for edge restarts), stderr to its log."""

    def __init__(self, args: list[str], env: dict[str, str], ready: str, logfile: Path,
                 timeout: float = 90, cwd: Path = ROOT) -> None:
        self.log: IO[bytes] = logfile.open("ab")
        self.restarts: list[str] = []
        try:
            self.proc, self.info = spawn(args, env, ready, timeout, what=f"'agentia "
                                         f"{' '.join(args)}' (log {logfile})", cwd=cwd,
                                         stderr=self.log, echo=self.log)
        except BaseException:
            self.log.close()
            raise
        self.pids = [int(p) for p in self.info.get("pids", str(self.proc.pid)).split(",")]
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.write(line)
            self.log.flush()
            text = line.decode().strip()
            if text.startswith("AGENTIA_UP_RESTARTED") and "kind=edge" in text:
                new = int(dict(p.split("=", 1) for p in text.split()[1:])["pid"])
                self.restarts.append(text)
                for i, pid in enumerate(self.pids):  # the supervisor restarts in place
                    if not Path(f"/proc/{pid}").exists():
                        self.pids[i] = new
                        break

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a supervisor drains and stops its edges), then SIGKILL by PID."""
        stop_all([self.proc])
        deadline = time.monotonic() + timeout
        for pid in getattr(self, "pids", []):
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                if Path(f"/proc/{pid}").exists() and _is_agentia(pid):
                    os.kill(pid, signal.SIGKILL)
        self.log.close()


def _is_agentia(pid: int) -> bool:
    try:
        return b"launch.cli" in Path(f"/proc/{pid}/cmdline").read_bytes()  # Edge: -m launch.cli
    except OSError:
        return False


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def gauge(metrics_dir: Path | None, pid: int, metric: str = "agentia_connections") -> float:
    """A process's own value of a Prometheus gauge, read from its multi-process file (the edge
    updates ``agentia_connections`` once a second)."""
    if metrics_dir is None:
        return math.nan
    from prometheus_client.mmap_dict import MmapedDict

    for path in metrics_dir.glob(f"gauge_*_{pid}.db"):
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            values = MmapedDict.read_all_values_from_file(str(path))  # type: ignore[no-untyped-call]
            for key, value, *_ in values:
                if json.loads(key)[0] == metric:
                    return float(value)
    return math.nan


def _safe(fn: Any, pid: int) -> float:
    try:
        return float(fn(pid))
    except (OSError, ValueError, IndexError):
        return math.nan


class Sampler(threading.Thread):
    """Twice a second: each edge's RSS, CPU seconds, open fds and connections (its
    ``agentia_connections`` gauge); the Locust processes' RSS and CPU; Redis's RSS; kernel
    slab. Written to samples.csv as it goes."""

    def __init__(self, path: Path, edges: Agentia, redis_pid: int, metrics_dir: Path | None,
                 interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.path, self.edges, self.redis_pid, self.interval = path, edges, redis_pid, interval
        self.metrics_dir = metrics_dir
        self.locust_pid = 0
        self.stopping = threading.Event()

    def sample(self) -> dict[str, float]:
        row: dict[str, float] = {"t": round(time.time(), 3)}
        for i, pid in enumerate(list(self.edges.pids)):
            row[f"edge_{i}_rss_kib"] = _safe(rss_kib, pid)
            row[f"edge_{i}_cpu_s"] = round(_safe(cpu_s, pid), 2)
            row[f"edge_{i}_fds"] = fds(pid)
            row[f"edge_{i}_conns"] = gauge(self.metrics_dir, pid)
        locust = [self.locust_pid, *children(self.locust_pid)] if self.locust_pid else []
        row["locust_rss_kib"] = sum(_safe(rss_kib, p) for p in locust) if locust else 0
        row["locust_cpu_s"] = round(sum(_safe(cpu_s, p) for p in locust), 2) if locust else 0
        row["redis_rss_kib"] = _safe(rss_kib, self.redis_pid)
        row["slab_kib"] = slab_kib()
        return row

    def run(self) -> None:
        first = self.sample()
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(first), extrasaction="ignore")
            w.writeheader()
            w.writerow(first)
            while not self.stopping.wait(self.interval):
                w.writerow(self.sample())
                f.flush()


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
    target = 0
    if a.scenario in ("storm", "reconnect", "slow"):
        batch = math.ceil(a.connections / math.ceil(a.connections / a.batch))
        target = math.ceil(a.connections / batch) * batch
        processes = a.locust_processes or max(1, math.ceil(target / 10_000))
        if target / processes > MAX_SOCKETS_PER_LOCUST_PROCESS:
            raise SystemExit(f"{target} connections over {processes} Locust processes is more "
                             f"than {MAX_SOCKETS_PER_LOCUST_PROCESS} each: add processes")
        meta.update(target=target, batch=batch, open_rate=a.rate, locust_processes=processes,
                    heartbeat_s=a.heartbeat)
        extra = ["--ws-connections", str(a.connections), "--ws-batch", str(a.batch),
                 "--ws-open-rate", str(a.rate), "--ws-heartbeat", str(a.heartbeat),
                 "--ws-inflight", str(a.inflight)]
        timeout = 3 * target / a.rate + 30 + 120
    if a.scenario == "storm":
        meta["hold_s"] = a.hold
        extra += ["--ws-hold", str(a.hold)]
        timeout += a.hold
    elif a.scenario in ("reconnect", "slow"):
        a.session_prefix = f"{a.scenario}-{os.urandom(3).hex()}"
        timeout += stream_seconds(a)
        meta.update(stream_meta(a))
        extra += ["--ws-control", str(out), "--ws-sessions", str(a.sessions),
                  "--ws-session-prefix", a.session_prefix, "--ws-reconnect-jitter",
                  str(a.jitter), "--ws-max-seconds", str(timeout),
                  "--ws-slow-fraction", str(getattr(a, "slow_fraction", 0.0)),
                  "--ws-slow-rcvbuf", str(getattr(a, "slow_rcvbuf", 4096))]
    elif a.scenario == "chat":
        processes = a.locust_processes or 1
        meta.update(users=a.users, turn_rate=a.rate, seconds=a.seconds, turns=a.turns,
                    workers=a.workers, word_delay_s=a.word_delay, locust_processes=processes)
        extra = ["--ws-chat-users", str(a.users), "--ws-turn-rate", str(a.rate),
                 "--ws-seconds", str(a.seconds), "--ws-turns", str(a.turns),
                 "--ws-turn-timeout", str(a.turn_timeout), "--ws-heartbeat", str(a.heartbeat)]
        timeout = a.seconds + a.turn_timeout + 120

    # AGENTIA_DEV: the Locust users mint with AGENTIA_JWT_SECRET or the public dev secret
    env = {**os.environ, "AGENTIA_DEV": "true", "AGENTIA_LOG_LEVEL": "warning",
           "AGENTIA_DRAIN_S": "2",
           "PYTHONUNBUFFERED": "1", "AGENTIA_DEMO_WORD_DELAY": str(a.word_delay)}
    env.pop("OPENAI_API_KEY", None)  # the offline demo model, always
    env.update(kv.split("=", 1) for kv in a.env)
    meta["env"] = a.env
    tree = Path(a.tree[0]).resolve() if a.tree else ROOT
    meta.update(tree=str(tree), commit=trees.commit(tree))
    extra += shlex.split(a.locust_args)
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
            ready = "AGENTIA_GATEWAY_READY" if a.edges > 1 else "AGENTIA_EDGE_READY"
            gw = Agentia(["gateway", "--port", "0", "--processes", str(a.edges)],
                         {**env, **trees.tree_env(tree, probe)}, ready, out / "gateway.log",
                         cwd=tree)
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
                                                  f"ws://127.0.0.1:{port}", processes, extra,
                                                  sampler, timeout)
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
    try:
        summary = results.summarize(out, meta)
    except Exception as exc:  # keep what was measured even if the analysis trips
        log(f"could not sum the run up: {exc!r}")
        summary = {**meta, "analysis_error": repr(exc)}
    try:
        summary["plots"] = [p.name for p in results.plot(out, a.scenario)]
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
