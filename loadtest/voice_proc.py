"""bench_voice's readings of /proc: a process tree's CPU (by process and by thread), its RSS and
PSS, the kernel's peak RSS, the machine's idle time, and :class:`Sampler`, which reads them over
a window (one phase of a capacity level)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

from loadtest.proc_stats import rss_kib

CLK = os.sysconf("SC_CLK_TCK")
VOICE_THREADS = 16  # the voice worker's threads by name: all of a silent call's (about 12)

def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime+stime seconds) of ``pid``, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK


def tree(root: int) -> dict[int, float]:
    """``root`` and all its descendants: pid -> CPU seconds so far."""
    return _subtree(_processes(), root)


def trees(roots: dict[str, int]) -> dict[str, dict[int, float]]:
    """:func:`tree` of each root, from one reading of /proc."""
    info = _processes()
    return {name: _subtree(info, root) for name, root in roots.items()}


def _processes() -> dict[int, tuple[int, float]]:
    info: dict[int, tuple[int, float]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _stat(int(d))) is not None:
            info[int(d)] = st
    return info


def _subtree(info: dict[int, tuple[int, float]], root: int) -> dict[int, float]:
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in info:
            out[pid] = info[pid][1]
            todo += [c for c, (pp, _) in info.items() if pp == pid]
    return out


def thread_cpu(root: int, descendants: bool = True) -> dict[tuple[int, str], float]:
    """CPU seconds so far of each thread of ``root``'s tree (or ``root`` alone), keyed by its
    id and name (``python``: a Python thread; the rest are native: WebRTC's, LiveKit's Rust
    runtime's, onnxruntime's, CTranslate2's)."""
    out: dict[tuple[int, str], float] = {}
    for pid in tree(root) if descendants else [root]:
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
            out[(int(tid), name)] = (int(rest[11]) + int(rest[12])) / CLK
    return out


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (forked job processes) counted once overall."""
    return _kib(f"/proc/{pid}/smaps_rollup", "Pss:")


def _kib(path: str, field: str) -> int:
    """The kB figure of the line of ``path`` that starts with ``field`` (0: none, or gone)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
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
    return _kib(f"/proc/{pid}/status", "VmHWM:")


def idle_jiffies() -> tuple[int, int]:
    """(idle+iowait, total) jiffies of the whole machine."""
    vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return vals[3] + vals[4], sum(vals)


class Sampler:
    """CPU (delta over the window) and RSS (peak of the sum, sampled) of the voice worker tree."""

    def __init__(self, voice_pid: int, livekit_pid: int, ours: list[int],
                 roles: dict[str, int] | None = None) -> None:
        self.voice_pid, self.livekit_pid = voice_pid, livekit_pid
        self.ours = ours
        """Every process of the benchmark (Redis, edge, worker, LiveKit, voice, this one)."""
        self.roles = roles or {}
        """The stack's processes by role (each with its descendants): their CPU seconds over
        the window are ``cpu_s_by_process``, beside this process's (the simulated callers)."""
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
        self.roles0 = trees(self.roles)
        self.threads0 = thread_cpu(self.voice_pid)
        self.me_threads0 = thread_cpu(os.getpid(), descendants=False)
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        cpu1 = self._cpu()
        ours1 = self._ours()
        roles1 = trees(self.roles)
        threads1 = thread_cpu(self.voice_pid)
        me_threads1 = thread_cpu(os.getpid(), descendants=False)
        me = sum(os.times()[:2]) - self.me0
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
            "bench_client_cpu_cores": round(me / wall, 2),
            "machine_busy_pct": round(100 * busy, 1),
            "other_load_cores": round(max(0.0, busy * cores - ours / wall), 2),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            **({"cpu_s_by_process": self._by_role(roles1, me, busy * cores * wall, ours),
                # this process by thread: the callers' Python (their loop) and WebRTC's
                "bench_callers_threads_cores": _top(self.me_threads0, me_threads1, wall)}
               if self.roles else {}),
            "voice_threads_cores": _top(self.threads0, threads1, wall, VOICE_THREADS),
        }

    def _by_role(self, now: dict[str, dict[int, float]], me: float, busy_s: float,
                 ours: float) -> dict[str, float]:
        """CPU seconds over the window: each role's tree, this process (the callers), the
        machine's busy time and what of it is not the benchmark's (other work on the box)."""
        out = {role: round(sum(c - self.roles0[role].get(p, 0.0) for p, c in pids.items()), 1)
               for role, pids in now.items()}
        return {**out, "bench_callers": round(me, 1), "machine_busy": round(busy_s, 1),
                "not_the_bench": round(max(0.0, busy_s - ours), 1)}


def _top(before: dict[tuple[int, str], float], after: dict[tuple[int, str], float],
         wall: float, count: int = 6) -> dict[str, float]:
    """The ``count`` thread names that took the most CPU over the window: cores each, summed
    over the threads of a name alive at its end (one that ended inside the window loses its
    share: a call's own threads live as long as the call)."""
    by_name: dict[str, float] = {}
    for key, cpu in after.items():
        by_name[key[1]] = by_name.get(key[1], 0.0) + cpu - before.get(key, 0.0)
    used = sorted(((c, n) for n, c in by_name.items()), reverse=True)[:count]
    return {n: round(c / wall, 3) for c, n in used}
