"""``pip install ./clients/python`` into an empty venv (PyPI reachable): at most 6 packages,
itself included; the package imports there without anything of the server; its unit tests
pass there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

SMOKE = """
import agentia_client as a
chunk = {"type": "chunk", "turn": 2, "attempt": 1, "seq": 1, "text": "hi"}
assert a.parse_frame(chunk) == a.Chunk(2, 1, 1, "hi")
assert a.close_action(4501) == "stop" and a.CloseCode.SLOW.reconnect
try:
    import agentia
except ImportError:
    pass
else:
    raise SystemExit("the server's package is importable: " + agentia.__file__)
print(a.__file__)
"""


def run(*args: str | Path, cwd: Path, timeout: float = 240) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    out = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def installed(python: Path, cwd: Path) -> set[str]:
    listed = orjson.loads(run(python, "-m", "pip", "list", "--format=json", cwd=cwd))
    return {p["name"].lower() for p in listed}


def test_pip_install_into_an_empty_venv(tmp_path: Path) -> None:
    run(sys.executable, "-m", "venv", tmp_path / "venv", cwd=tmp_path)
    python = tmp_path / "venv" / "bin" / "python"
    before = installed(python, tmp_path)
    run(python, "-m", "pip", "install", "-q", ROOT / "clients" / "python", cwd=tmp_path)
    new = installed(python, tmp_path) - before
    assert "agentia-client" in new and len(new) <= 6, sorted(new)
    assert {"websockets", "orjson"} <= new
    where = run(python, "-c", SMOKE, cwd=tmp_path)  # a cwd outside the repository
    assert "site-packages" in where and (python.parent.parent / "lib").as_posix() in where
    # its unit tests, with pytest added after the count
    run(python, "-m", "pip", "install", "-q", "pytest>=8", "pytest-asyncio>=0.24", cwd=tmp_path)
    tests = [ROOT / "tests" / "unit" / f
             for f in ("test_client_sdk.py", "test_client_events.py", "test_client_replies.py")]
    out = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest",
              "-o", "asyncio_mode=auto", *tests, cwd=ROOT)
    assert " passed" in out and "failed" not in out, out
