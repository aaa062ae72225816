"""Run one scenario against several checkouts (``--tree``, repeatable) in one invocation, and
time the edges' garbage collections from outside (``--gc-probe``: ``gcprobe/sitecustomize.py``).

    python -m loadtest.locust.run storm --connections 18000 --edges 2 --hold 30 \\
        --tree /work/main --tree . --gc-probe

Only the gateway runs from each tree (its working directory and ``PYTHONPATH``); Locust, the
runner and Redis are this checkout's, so the trees are measured by the same client.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

PROBE = Path(__file__).resolve().parent / "gcprobe"


def tree_env(tree: Path, probe_dir: Path | None) -> dict[str, str]:
    """The gateway's environment for ``tree``: its packages first, the probe before them."""
    paths = ([str(PROBE)] if probe_dir is not None else []) + [str(tree)]
    env = {"PYTHONPATH": ":".join(paths)}
    if probe_dir is not None:
        env["AGENTIA_GC_PROBE_DIR"] = str(probe_dir)
    return env


def commit(tree: Path) -> str:
    """The tree's HEAD, with ``+dirty`` if it has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tree), *args], capture_output=True,
                              text=True, check=False).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain",
                                                                  "--untracked-files=no") else "")


def gc_pauses(probe_dir: Path, pids: list[int]) -> dict[str, Any]:
    """Per edge: collections of generation 1 and 2 (pause, objects walked) and the longest
    pause of each generation; ``longest_s``: the longest over all edges and generations."""
    edges: dict[str, Any] = {}
    for pid in pids:
        rows = [json.loads(line) for line in (probe_dir / f"gc-{pid}.jsonl").read_text()
                .splitlines()] if (probe_dir / f"gc-{pid}.jsonl").exists() else []
        summary = next((r for r in rows if r.get("summary")), None)
        old = [r for r in rows if not r.get("summary") and r["gen"] > 0]
        edges[str(pid)] = {
            "longest_s_by_gen": summary["longest_s"] if summary else None,
            "collections_by_gen": summary["collections"] if summary else None,
            "gen1_or_2": [{k: r[k] for k in ("gen", "pause_s", "walked", "collected")}
                          for r in old],
            "longest_s": max((r["pause_s"] for r in rows if not r.get("summary")), default=0.0)}
    return {"edges": edges, "longest_s": max((e["longest_s"] for e in edges.values()),
                                             default=0.0)}
