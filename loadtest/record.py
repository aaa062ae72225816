"""Machine-readable benchmark results: one JSON file per benchmark run under ``loadtest/results/``.

Every benchmark that produces a figure someone will rely on (docs/benchmarks.md, the capacity
model) records it here with what is needed to trust and rerun it: date, machine, commit and
the exact command. ``agentia capacity`` reads these files, never constants typed by hand.

    from loadtest.record import record
    record("edge-idle", {"rss_kib_per_conn": 14.9, ...}, notes="one edge process")

A file is named ``<name>.json`` (the latest run of that benchmark wins; git keeps history).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "loadtest" / "results"


SIMD = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8")
"""The CPU's vector extensions recorded with a run: the same model name ("AMD EPYC") came with
and without AVX-512 on this project's machines, and CTranslate2's int8 Whisper cost ~4x the CPU
without it (docs/voice.md, session 13)."""


def machine() -> dict[str, Any]:
    cpu, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {"cpu": cpu, "simd": [f for f in SIMD if f in flags], "cores": os.cpu_count(),
            "mem_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version()}


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def record(name: str, figures: dict[str, Any], *, notes: str = "",
           command: str | None = None, results_dir: Path | None = None,
           measured: str | None = None) -> Path:
    """Write ``<results_dir>/<name>.json`` and return its path. ``measured``: the commit of
    the code measured when it is another checkout's (a bench's ``--tree``): the record's
    ``commit`` is then that one, and ``bench_commit`` the checkout that ran the bench."""
    out_dir = results_dir or Path(os.environ.get("AGENTIA_RESULTS_DIR", RESULTS))
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "name": name,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "commit": measured or commit(),
        **({"bench_commit": commit()} if measured else {}),
        "command": command or " ".join(shlex.quote(a) for a in [
            "python", "-m", _module_of(sys.argv[0]), *sys.argv[1:]]),
        "notes": notes,
        "figures": figures,
    }
    path = out_dir / f"{name}.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    return path


def load(name: str, results_dir: Path | None = None) -> dict[str, Any]:
    """One recorded result; raises FileNotFoundError when that benchmark was never run."""
    path = (results_dir or Path(os.environ.get("AGENTIA_RESULTS_DIR", RESULTS))) / f"{name}.json"
    doc: dict[str, Any] = orjson.loads(path.read_bytes())
    return doc


def _module_of(argv0: str) -> str:
    p = Path(argv0).resolve()
    try:
        rel = p.relative_to(ROOT).with_suffix("")
        return ".".join(rel.parts)
    except ValueError:
        return p.name
