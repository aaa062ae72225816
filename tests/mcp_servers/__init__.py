"""Real MCP servers the tests run (stdio and streamable HTTP), written with the ``mcp`` package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from agentia.supervise import start

ROOT = Path(__file__).resolve().parent.parent.parent


def stdio_entry(name: str = "notes", **extra: Any) -> dict[str, Any]:
    """A registry entry starting ``tests/mcp_servers/notes.py`` over stdio (run from this tree:
    the stdio child gets only a safe subset of the environment, so no PYTHONPATH)."""
    return {"name": name, "command": sys.executable, "args": ["-m", "tests.mcp_servers.notes"],
            "cwd": str(ROOT), **extra}


def start_http(port: int = 0) -> tuple[subprocess.Popen[bytes], int]:
    """The notes server over streamable HTTP (``port`` 0: a free one); stop it by PID."""
    proc, info = start([sys.executable, "-m", "tests.mcp_servers.notes", "--http", str(port)],
                       {**os.environ, "PYTHONPATH": str(ROOT)}, "NOTES_READY", 60,
                       cwd=ROOT, stderr=subprocess.DEVNULL, supervised=False)
    return proc, int(info["port"])


def http_entry(port: int, name: str = "web", **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": f"http://127.0.0.1:{port}/mcp", **extra}


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def alive(pid: int) -> bool:
    """Is ``pid`` a live process (not gone, not a zombie)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
