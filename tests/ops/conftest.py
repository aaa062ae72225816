"""tests/ops: the processes these tests start log into test-output/ (tests.conftest.Proc)."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT


@pytest.fixture(autouse=True)
def _test_output_dir() -> None:
    (ROOT / "test-output").mkdir(exist_ok=True)
