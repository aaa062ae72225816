"""The floors at run time: the product's entry points load without the load tools or the tests.

import-linter (./dev test, pyproject.toml [tool.importlinter]) checks the import statements;
this checks what a started process really has in ``sys.modules``, so an import hidden behind a
string (importlib) or a plugin would be caught too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
LOADED = """
import sys, orjson
import launch.cli, launch.up, control.api, gateway.main, sessions.main
assert "capacity" in launch.cli.parser().format_help()  # listed, not loaded
print(orjson.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("loadtest", "tests")))
      .decode())
"""


def loaded_tools() -> list[str]:
    out = subprocess.run([sys.executable, "-c", LOADED], cwd=ROOT, capture_output=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    names: list[str] = orjson.loads(out.stdout)
    return names


def test_the_product_loads_without_loadtest_or_tests() -> None:
    assert loaded_tools() == []


@pytest.mark.parametrize("argv", [["capacity", "--users", "1000", "--json"]])
def test_the_capacity_command_still_reaches_the_planner(argv: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "launch.cli", *argv], cwd=ROOT,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    assert orjson.loads(out.stdout)["total_usd_month"] > 0
