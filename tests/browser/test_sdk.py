"""Runs the JavaScript SDK's unit tests (tests/browser/agentia.test.mjs) with ``node --test``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js 20+ (node on PATH)")
def test_sdk_unit_tests_pass_under_node() -> None:
    out = subprocess.run(["node", "--test", str(HERE / "agentia.test.mjs")], cwd=HERE.parent.parent,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
