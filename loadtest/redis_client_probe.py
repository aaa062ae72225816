"""Who wakes redis-server, and how often a turn (issue 13, session 20): attach to the
redis-server of a running ``loadtest.bench_turnpath`` (as ``loadtest.redis_tick_probe`` does),
map each client connection to its process (``ss -tnp``: edge, worker, the load generator) and
take ``--seconds`` of ``MONITOR``. Commands a client sent one after the other, with no other
client's between and no gap over ``--gap-us``, are counted as one request (one socket read of
redis-server: a pipeline or a lone command; a script's inner calls belong to it); each request
is named by what it carries (a script by its SHA1, found among the module-level Lua texts of
``sessions`` and ``gateway``; a pipeline by its commands and key kinds). Turns in the window:
the ``START`` scripts seen. INFO stats' ``total_reads_processed`` over the same window is
recorded beside it, to check the grouping. Run under the bench lock, for example:

    python -m loadtest.bench_turnpath --tree . --profiles long --sessions 40 --seconds 30 \\
        --rounds 1 &
    python -m loadtest.redis_client_probe --bench-pid $! --seconds 4 --record redis20-clients

``MONITOR`` costs redis-server CPU (it copies every command to the probe): the counts hold,
not the run's CPU figures.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import importlib
import pkgutil
import re
import subprocess
import time
from typing import Any

import redis

from loadtest.record import record
from loadtest.redis_tick_probe import _loaded


def _script_names() -> dict[str, str]:
    """SHA1 -> 'module.NAME' of every module-level Lua text of sessions and gateway."""
    out: dict[str, str] = {}
    for pkg_name in ("sessions", "gateway"):
        pkg = importlib.import_module(pkg_name)
        for m in pkgutil.iter_modules(pkg.__path__):
            try:
                mod = importlib.import_module(f"{pkg_name}.{m.name}")
            except Exception:
                continue
            for k, v in vars(mod).items():
                if isinstance(v, str) and "redis.call" in v:
                    out.setdefault(hashlib.sha1(v.encode()).hexdigest(), f"{m.name}.{k}")
    return out


def _owners() -> dict[str, str]:
    """'127.0.0.1:PORT' of each local TCP socket -> its process's role."""
    out = {}
    ss = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True, check=False).stdout
    for line in ss.splitlines():
        f = line.split()
        if len(f) < 6:
            continue
        m = re.search(r"pid=(\d+)", f[5])
        if not m:
            continue
        try:
            cmd = open(f"/proc/{m.group(1)}/cmdline").read().replace("\0", " ")  # noqa: SIM115
        except OSError:
            continue
        role = ("worker" if "sessions" in cmd or "worker" in cmd else
                "edge" if "gateway" in cmd or "edge" in cmd else
                "bench" if "bench" in cmd or "loadtest" in cmd else cmd[:40])
        out[f[3]] = f"{role}:{m.group(1)}"
    return out


def _kind(key: str) -> str:
    """A key's kind: the part after its hash tag (log, meta, out, in, mem, ...)."""
    m = re.search(r"\{([^}]*)\}:?(.*)$", key)
    if not m:
        return key[:20]
    tag, rest = m.groups()
    return (rest or tag.split(".")[0]) if tag in ("node",) or tag.startswith("in") else rest


def _label(cmds: list[list[str]], shas: dict[str, str]) -> str:
    parts: collections.Counter[str] = collections.Counter()
    for c in cmds:
        name = c[0].upper()
        if name in ("EVALSHA", "EVAL"):
            what = shas.get(c[1], c[1][:8]) if name == "EVALSHA" else "EVAL"
            parts[what] += 1
        elif len(c) > 1:
            parts[f"{name} {_kind(c[1])}"] += 1
        else:
            parts[name] += 1
    return " + ".join(f"{k}" + (f" x{n}" if n > 1 else "") for k, n in sorted(parts.items()))


def _perf_reads(pid: int, seconds: float) -> subprocess.Popen[str]:
    """``perf record`` of redis-server's ``read`` and ``epoll_wait`` calls (the socket reads,
    which fd, and the event-loop iterations) over ``seconds``."""
    return subprocess.Popen(
        ["perf", "record", "-q", "-o", "/tmp/redis_client_probe.data", "-e",
         "syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait", "-p", str(pid), "--",
         "sleep", str(seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wakeups(fds: dict[int, str]) -> dict[str, Any]:
    """From the ``perf record``: socket reads by client role, and the event-loop iterations
    by the roles whose sockets they read (the iterations that read none: timers)."""
    out = subprocess.run(["perf", "script", "-i", "/tmp/redis_client_probe.data"],
                         capture_output=True, text=True, check=False).stdout
    reads: collections.Counter[str] = collections.Counter()
    loops: collections.Counter[str] = collections.Counter()
    cur: set[str] = set()
    n_loops = 0
    for line in out.splitlines():
        if "sys_enter_epoll_wait" in line:
            if n_loops:
                loops[" + ".join(sorted(cur)) or "(none: a timer)"] += 1
            n_loops += 1
            cur = set()
        elif "sys_enter_read" in line:
            m = re.search(r"fd: (0x[0-9a-f]+)", line)
            if m and n_loops:
                who = fds.get(int(m.group(1), 16), f"fd{int(m.group(1), 16)}")
                reads[who] += 1
                cur.add(who.split(":")[0])
    return {"loops": n_loops, "reads": dict(reads.most_common()),
            "loops_by_roles_read": dict(loops.most_common())}


def monitor(r: redis.Redis, seconds: float, gap_us: float,
            shas: dict[str, str], pid: int) -> dict[str, Any]:
    labels: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    s0 = r.info("stats")
    perf = _perf_reads(pid, seconds)
    reqs: collections.Counter[tuple[str, str]] = collections.Counter()
    c0 = len(r.client_list())
    starts = 0
    cur: list[list[str]] = []
    cur_client = ""
    last_t = 0.0

    def close() -> None:
        if cur:
            reqs[(cur_client, _label(cur, shas))] += 1
            labels[cur_client][_label(cur, shas)] += 1

    watch: Any = r.monitor  # redis-py's Monitor is untyped
    with watch() as m:
        until = time.time() + seconds
        for cmd in m.listen():
            t = float(cmd["time"])
            if t > until:
                break
            if cmd.get("client_type") == "lua":
                last_t = t
                continue
            client = f"{cmd['client_address']}:{cmd['client_port']}"
            words = cmd["command"].split(" ")
            if client != cur_client or (t - last_t) * 1e6 > gap_us:
                close()
                cur, cur_client = [], client
            cur.append(words)
            name = shas.get(words[1], "") if words[0].upper() == "EVALSHA" else ""
            starts += name == "turn_scripts.START"
            last_t = t
        close()
    s1 = r.info("stats")
    perf.wait()
    owners = _owners()  # at the end: the connections opened in the window too
    fds = {}
    young: collections.Counter[str] = collections.Counter()
    clients = r.client_list()
    for c in clients:
        who = owners.get(c["addr"], c["addr"]).split(":")[0]
        fds[int(c["fd"])] = f"{who}:{c['addr'].rsplit(':', 1)[1]}"
        if int(c["age"]) <= seconds + 1:
            young[who] += 1
    woke = _wakeups(fds)
    by_role: collections.Counter[tuple[str, str]] = collections.Counter()
    for (client, what), n in reqs.items():
        by_role[(owners.get(client, client).split(":")[0], what)] += n
    reqs = by_role
    labels = {f"{owners.get(k, k).split(':')[0]}:{k.rsplit(':', 1)[1]}": v
              for k, v in labels.items()}
    reads = int(s1["total_reads_processed"]) - int(s0["total_reads_processed"])
    by_client: collections.Counter[str] = collections.Counter()
    for (who, _), n in reqs.items():
        by_client[who.split(":")[0]] += n
    turns = max(starts, 1)
    roles: collections.Counter[str] = collections.Counter()
    for k, v in woke["reads"].items():
        roles[k.split(":")[0]] += v
    return {
        "seconds": seconds, "gap_us": gap_us, "turns_started": starts,
        "requests": sum(reqs.values()), "info_reads": reads,
        "connections_received": int(s1["total_connections_received"])
        - int(s0["total_connections_received"]),
        "clients_before_after": [c0, len(clients)],
        "clients_opened_in_window_by_role": dict(young),
        "requests_per_turn": round(sum(reqs.values()) / turns, 2),
        "perf_loops_per_turn": round(woke["loops"] / turns, 2),
        "perf_reads_by_role_per_turn": {k: round(v / turns, 3) for k, v in roles.items()},
        "perf_reads_per_turn": {k: round(v / turns, 3) for k, v in woke["reads"].items()},
        "perf_loops_by_roles_read_per_turn": {
            k: round(v / turns, 3) for k, v in woke["loops_by_roles_read"].items()},
        "connections": {k: dict(v.most_common(6)) for k, v in labels.items()},
        "by_role_per_turn": {k: round(v / turns, 2) for k, v in by_client.most_common()},
        "by_request_per_turn": [
            {"who": who.split(":")[0], "what": what, "n": n, "per_turn": round(n / turns, 3)}
            for (who, what), n in reqs.most_common()],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench-pid", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--gap-us", type=float, default=300.0)
    ap.add_argument("--wait", type=float, default=240.0, help="for the load to start, s")
    ap.add_argument("--after", type=float, default=8.0, help="s after the load starts")
    ap.add_argument("--record", metavar="NAME")
    a = ap.parse_args()
    if not 0 < a.seconds <= 15:
        ap.error("--seconds 0-15")
    shas = _script_names()
    pid, r = _loaded(a.bench_pid, a.wait)
    time.sleep(a.after)
    out = monitor(r, a.seconds, a.gap_us, shas, pid)
    for row in out["by_request_per_turn"][:40]:
        print(f"{row['per_turn']:7.3f}  {row['who']:7s} {row['what']}")
    import json
    print(json.dumps({k: v for k, v in out.items() if k != "by_request_per_turn"}, indent=1))
    if a.record:
        print("recorded", record(a.record, out))


if __name__ == "__main__":
    main()
