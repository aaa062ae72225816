"""Test-suite time, tree against tree (docs/development.md "Test suite time"): the same pytest
files run on two checkouts, rounds alternated, side by side in one run on the same box.

    .venv/bin/python -m loadtest.bench_tests --tree /work/wt/base15 --tree . \\
        --rounds 2 --name tests-worker-stop tests/e2e/test_api.py

Each run is ``python -m pytest -q -p no:cacheprovider FILES`` in the tree (cwd and PYTHONPATH
the tree, this interpreter: one ``.venv`` for both), with a small plugin that sums pytest's own
setup/call/teardown seconds of every test and counts the outcomes. Recorded with
loadtest/record.py: wall seconds, the three sums, the outcomes and the load average before and
after each run (the machine is shared: compare only within one run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtest.record import record

PLUGIN = '''
import json, os
_sums = {"setup": 0.0, "call": 0.0, "teardown": 0.0}
_outcomes = {}
_slow = []

def pytest_runtest_logreport(report):
    _sums[report.when] += report.duration
    if report.when == "call" or report.outcome != "passed":
        key = report.outcome if report.when == "call" else f"{report.when}-{report.outcome}"
        _outcomes[key] = _outcomes.get(key, 0) + 1
    _slow.append((report.duration, report.when, report.nodeid))

def pytest_sessionfinish(session):
    _slow.sort(reverse=True)
    with open(os.environ["BENCH_TESTS_OUT"], "w") as f:
        json.dump({"sums": _sums, "outcomes": _outcomes,
                   "slowest": [[round(d, 2), w, n] for d, w, n in _slow[:15]]}, f)
'''


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def tree_commit(tree: Path) -> str:
    git = ["git", "-C", str(tree)]
    head = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return head + ("+dirty" if dirty else "")


def run_once(tree: Path, files: list[str], plugin_dir: str, timeout: float) -> dict[str, Any]:
    out = Path(plugin_dir) / "out.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{plugin_dir}",
           "BENCH_TESTS_OUT": str(out)}
    before, t0 = load(), time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "bench_tests_phases", *files], cwd=tree, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    wall = time.monotonic() - t0
    got = json.loads(out.read_text()) if out.exists() else {}
    tail = proc.stdout.decode(errors="replace").strip().splitlines()[-1:]
    return {"tree": str(tree), "commit": tree_commit(tree), "exit": proc.returncode,
            "wall_s": round(wall, 1),
            "sums_s": {k: round(v, 1) for k, v in got.get("sums", {}).items()},
            "outcomes": got.get("outcomes", {}), "slowest": got.get("slowest", []),
            "summary": tail[0] if tail else "", "load_before": before, "load_after": load()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tree", action="append", required=True, type=Path,
                    help="a checkout (twice: before, after)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--name", default="tests")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per pytest run, seconds")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    trees = [t.resolve() for t in a.tree]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as plugin_dir:
        Path(plugin_dir, "bench_tests_phases.py").write_text(PLUGIN)
        for r in range(a.rounds):
            order = trees if r % 2 == 0 else trees[::-1]
            for tree in order:
                res = run_once(tree, a.files, plugin_dir, a.timeout)
                res["round"] = r
                runs.append(res)
                print(json.dumps({k: res[k] for k in ("round", "tree", "exit", "wall_s",
                                                      "sums_s", "outcomes", "load_before",
                                                      "load_after")}), flush=True)
                # after every run: an interrupted bench keeps the runs it finished
                record(a.name, {"files": a.files, "runs": runs},
                       notes="pytest files per tree, rounds alternated; the 2-core box was "
                             "shared with other engineers (load averages per run)")


if __name__ == "__main__":
    main()
