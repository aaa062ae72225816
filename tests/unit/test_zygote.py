"""The tests' zygote (tests/zygote.py): a forked child behaves as ``python -m launch.cli``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from launch.redis_server import RedisServer
from tests import conftest, zygote
from tests.conftest import ROOT, Cluster, Proc

BAD = ["worker", "--agent", "x=tests.agents_fixtures:FailingModel"]  # loads the SDK, then exits 2


def _run(popen: type[subprocess.Popen[bytes]] | object, args: list[str],
         env: dict[str, str]) -> tuple[int, bytes, bytes]:
    cmd = [sys.executable, "-m", "launch.cli", *args]
    p = popen(cmd, env=env, cwd=str(ROOT), stdin=subprocess.DEVNULL,  # type: ignore[operator]
              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=120)
    return p.returncode, out, err


def _client() -> zygote.Client:
    conftest._popen(["worker"], dict(os.environ), (), True)  # starts the session's client
    assert conftest._zygote is not None
    return conftest._zygote


@pytest.mark.skipif(not conftest.USE_ZYGOTE, reason="AGENTIA_TEST_ZYGOTE=0")
def test_a_forked_child_exits_and_writes_as_an_exec_d_one() -> None:
    env = {**os.environ, "AGENTIA_REDIS_URL": "redis://127.0.0.1:1/0", "PYTHONUNBUFFERED": "1"}
    client = _client()
    assert client.eligible(BAD, env, str(ROOT))
    forked = _run(lambda *a, **kw: zygote.Forked(*a, zygote=client, **kw), BAD, env)
    plain = _run(subprocess.Popen, BAD, env)
    assert forked == plain
    assert forked[0] == 2 and forked[2].startswith(b"agentia: configuration error: agent x")


@pytest.mark.skipif(not conftest.USE_ZYGOTE, reason="AGENTIA_TEST_ZYGOTE=0")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_forked_worker_is_signalled_and_reaped_by_pid(
        redis_server: RedisServer, prefix: str, sig: signal.Signals) -> None:
    c = Cluster(redis_server.url, prefix)
    try:
        codes = []
        for fork in (True, False):
            w = Proc(["worker", "--agent", "tests.agents_fixtures:fast"], c.env,
                     "AGENTIA_WORKER_READY", fork=fork)
            c.procs.append(w)
            assert isinstance(w.proc, zygote.Forked) == fork
            assert w.proc.poll() is None
            with pytest.raises(subprocess.TimeoutExpired):
                w.proc.wait(0.2)
            os.kill(w.proc.pid, sig)
            codes.append(w.proc.wait(30))
            assert w.proc.poll() == codes[-1]
        assert codes[0] == codes[1]
        if sig == signal.SIGKILL:
            assert codes[0] == -signal.SIGKILL
    finally:
        c.stop()


def test_what_the_zygote_does_not_stand_for() -> None:
    client = zygote.Client(str(ROOT), {"PYTHONPATH": "/a"}, sys.stderr.buffer)
    env = {"PYTHONPATH": "/a", "PYTHONUNBUFFERED": "1", "AGENTIA_X": "1"}
    assert client.eligible(["gateway", "--port", "0"], env, str(ROOT))
    assert not client.eligible(["gateway"], {**env, "PYTHONPATH": "/b"}, str(ROOT))
    assert not client.eligible(["gateway"], {**env, "OPENAI_AGENTS_DONT_LOG_MODEL_DATA": "0"},
                               str(ROOT))
    assert not client.eligible(["voice"], env, str(ROOT))
    assert not client.eligible(["gateway"], env, "/tmp")
