"""The first hour of a newcomer (issue 11), against real processes: Ctrl-C with the output
piped into ``tee`` stops everything, a busy port is one line and a quick non-zero exit,
``/metrics`` counts with voice on, ``agentia chat`` quits on one Ctrl-C and finds the running
system, and the banner's chat command works as printed.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from agentia.supervise import StartError, Stopped, spawn
from launch.redis_server import RedisServer, free_port
from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def up_env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTIA_")}
    env |= {"AGENTIA_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1",
            # console scripts run this tree too, its SDK (clients/python) included
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")])}
    env.pop("OPENAI_API_KEY", None)
    return env


def ready_info(text: str) -> dict[str, str]:
    line = next(ln for ln in text.splitlines() if ln.startswith("AGENTIA_UP_READY"))
    return dict(p.split("=", 1) for p in line.split()[1:])


def wait_for(path: Path, marker: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if marker in text:
            return text
        assert proc.poll() is None, f"exited with {proc.returncode}: {text}"
        time.sleep(0.2)
    raise AssertionError(f"no {marker} within {timeout} s")


def groups_alive(pgids: set[int]) -> list[str]:
    """Processes (``pid cmdline``) still in any of these process groups."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z" and int(fields[2]) in pgids:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                alive.append(f"{entry.name} {cmd}")
        except (OSError, ValueError):
            continue
    return alive


def test_ctrl_c_with_output_piped_into_a_dead_tee_stops_everything(tmp_path: Path) -> None:
    """``agentia up 2>&1 | tee up.log``, Ctrl-C: tee dies first, then ``up`` gets SIGINT and
    must still stop every child and every process they started (voice jobs too)."""
    log = tmp_path / "up.log"
    up = subprocess.Popen([sys.executable, "-m", "launch.cli", "up", "--port", "0",
                           "--api-port", "0"], cwd=ROOT, env=up_env(tmp_path / "state"),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL)
    assert up.stdout is not None
    tee = subprocess.Popen(["tee", str(log)], stdin=up.stdout, stdout=subprocess.DEVNULL)
    up.stdout.close()  # tee is the only reader, as in a shell pipeline
    try:
        info = ready_info(wait_for(log, "AGENTIA_UP_READY", up, 150))
        pids = {int(p) for p in info["pids"].split(",")}
        assert len(pids) == (6 if info["voice"] == "on" else 4)
        assert groups_alive(pids), "the children should run in their own process groups"
        tee.send_signal(signal.SIGINT)  # the terminal's Ctrl-C reaches tee first
        tee.wait(10)
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
        assert groups_alive(pids) == []
        assert "Traceback" not in log.read_text()
    finally:
        for p in (tee, up):
            if p.poll() is None:
                p.kill()
                p.wait(10)


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.mark.parametrize("option", ["--port", "AGENTIA_INTERNAL_PORT", "--api-port",
                                    "--livekit-port"])
def test_up_with_a_busy_port_says_which_and_exits(tmp_path: Path, held_port: int,
                                                  option: str) -> None:
    args = {"--port": "0", "--api-port": "0", option: str(held_port)}
    env = up_env(tmp_path / "state")
    if not option.startswith("-"):  # a setting, not an option
        env[option] = args.pop(option)
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "launch.cli", "up",
                          *[x for kv in args.items() for x in kv]], cwd=ROOT,
                         env=env, capture_output=True, timeout=30)
    assert time.monotonic() - started < 10
    assert out.returncode == 1
    err = out.stderr.decode().strip()
    assert len(err.splitlines()) == 1, err
    assert f"port {held_port} " in err and option in err and "in use" in err
    assert not (tmp_path / "state" / "redis").exists(), "nothing starts when a port is busy"


@pytest.mark.parametrize("transport", ["picows", "websockets"])
@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize("which", ["public", "internal"])
def test_gateway_on_a_busy_port_says_which_and_exits(redis_server: RedisServer, held_port: int,
                                                     transport: str, processes: str,
                                                     which: str) -> None:
    env = {**os.environ, "AGENTIA_REDIS_URL": redis_server.url, "AGENTIA_TRANSPORT": transport,
           "AGENTIA_DEV": "true"}
    port, hint = str(held_port), "--port"
    if which == "internal":
        env["AGENTIA_INTERNAL_PORT"], port, hint = port, "0", "AGENTIA_INTERNAL_PORT=PORT"
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "launch.cli", "gateway", "--port", port,
                          "--processes", processes], cwd=ROOT, env=env,
                         capture_output=True, timeout=30)
    assert time.monotonic() - started < 10
    assert out.returncode == 1
    err = out.stderr.decode().strip()
    assert len(err.splitlines()) == 1, err
    assert f"port {held_port} " in err and hint in err


def test_spawn_keeps_its_deadline_and_hears_a_stop(redis_server: RedisServer) -> None:
    """A child that never prints the awaited line: spawn gives up at its deadline (or at a
    stop signal) and leaves no process behind."""
    env = {**os.environ, "AGENTIA_REDIS_URL": redis_server.url, "AGENTIA_DEV": "true"}
    args = ["gateway", "--port", "0"]
    started = time.monotonic()
    with pytest.raises(StartError, match="not ready"):
        spawn(args, env, "AGENTIA_NEVER_READY", timeout=3)
    assert 3 <= time.monotonic() - started < 8
    stop_at = time.monotonic() + 1
    with pytest.raises(Stopped):
        spawn(args, env, "AGENTIA_NEVER_READY", timeout=60,
              stopping=lambda: time.monotonic() > stop_at)
    assert time.monotonic() - stop_at < 3
    # both children were killed and reaped (a leftover would be a child of ours)
    ours = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(os.getpid())],
                          capture_output=True, text=True).stdout
    assert "launch.cli gateway" not in ours


def test_spawn_reports_a_child_that_exits_before_ready(redis_server: RedisServer,
                                                       held_port: int) -> None:
    env = {**os.environ, "AGENTIA_REDIS_URL": redis_server.url, "AGENTIA_DEV": "true"}
    started = time.monotonic()
    with pytest.raises(StartError, match=r"'agentia gateway --port .*' exited with 1 before"):
        spawn(["gateway", "--port", str(held_port)], env, "AGENTIA_EDGE_READY", timeout=30)
    assert time.monotonic() - started < 10


class Up:
    """``agentia up`` with voice when it can run here, its banner and READY line."""

    def __init__(self, state: Path) -> None:
        self.state, self.env = state, up_env(state)
        self.log = state.parent / "up.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "launch.cli", "up", "--port", "0", "--api-port", "0"],
            cwd=ROOT, env=self.env, stdout=open(self.log, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.text = wait_for(self.log, "AGENTIA_UP_READY", self.proc, 150)
        self.info = ready_info(self.text)

    def counter(self, series: str) -> float:
        body = urllib.request.urlopen(self.info["api"] + "/metrics", timeout=10).read().decode()
        found = re.search(rf"^{re.escape(series)} (\S+)$", body, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    s = Up(tmp_path_factory.mktemp("first-hour") / "state")
    yield s
    s.stop()
    assert s.proc.returncode == 0
    assert "Traceback" not in s.log.read_text()


def test_metrics_count_turns_with_voice_on(system: Up) -> None:
    if system.info["voice"] != "on":
        pytest.skip("voice is off here (no LiveKit server binary or no voice extra)")
    completed = 'agentia_turns_total{outcome="completed"}'
    sent = 'agentia_frames_total{direction="out"}'
    before, sent_before = system.counter(completed), system.counter(sent)
    subprocess.run([sys.executable, "-m", "launch.cli", "chat", "--url", system.info["url"],
                    "-m", "what is 19 + 23"], cwd=ROOT, env=system.env, check=True,
                   capture_output=True, timeout=60)
    deadline = time.monotonic() + 10  # the edge moves its tallies to Prometheus once a second

    def moved() -> bool:  # the worker's count and the edge's
        return system.counter(completed) >= before + 1 and system.counter(sent) > sent_before

    while not moved() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert system.counter(completed) >= before + 1
    assert system.counter(sent) > sent_before


def chat_in_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes agentia chat on the terminal's other end
        os.chdir(ROOT)
        os.execve(argv[0], argv, env)
    out, reaped = b"", False

    def until(marker: bytes, timeout: float) -> None:
        """Read until ``marker`` appears in what comes from now on."""
        nonlocal out
        start, deadline = len(out), time.monotonic() + timeout
        while marker not in out[start:] and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    out += os.read(fd, 4096)
                except OSError:  # the child is gone
                    return

    try:
        until(b"> ", 30)
        assert b"Ctrl-C" in out, out  # it says how to quit
        os.write(fd, b"what is 19 + 23\n")
        until(b"\n> ", 30)  # the reply, then the prompt again, stdin idle
        assert b"42" in out and out.endswith(b"> "), out
        started = time.monotonic()
        os.kill(pid, signal.SIGINT)  # once
        for _ in range(50):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                reaped = True
                assert time.monotonic() - started < 5
                return os.waitstatus_to_exitcode(status), out
            time.sleep(0.1)
        raise AssertionError(f"agentia chat still runs 5 s after one Ctrl-C: {out!r}")
    finally:
        os.close(fd)
        if not reaped and not os.waitpid(pid, os.WNOHANG)[0]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_chat_finds_the_running_system_and_quits_on_one_ctrl_c(system: Up) -> None:
    # no --url: the port is not the default one; up.json in the state dir says where it is
    code, out = chat_in_a_terminal([sys.executable, "-m", "launch.cli", "chat"], system.env)
    assert code == 0
    # "[tool: calculate]", or with its arguments once the client shows them (issue 14)
    assert b"[tool: calculate" in out and b"Traceback" not in out


@pytest.mark.parametrize("stdin", ["pipe", "file"])
def test_banner_chat_command_works_as_printed(system: Up, tmp_path: Path, stdin: str) -> None:
    line = next(ln for ln in system.text.splitlines() if ln.startswith("try it"))
    command = shlex.split(line.removeprefix("try it"))
    said = tmp_path / "said.txt"  # a regular file: epoll refuses it, chat reads it directly
    said.write_bytes(b"what is 19 + 23\nwhat is 6 * 7")
    with open(said, "rb") as f:
        if stdin == "file":
            out = subprocess.run(command, cwd=ROOT, env=system.env, stdin=f,
                                 capture_output=True, timeout=60)
        else:
            out = subprocess.run(command, cwd=ROOT, env=system.env, input=f.read(),
                                 capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert b"42" in out.stdout and out.stdout.count(b"[tool: calculate") == 2


def test_chat_refused_is_one_line(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}/v1/ws"
    out = subprocess.run([sys.executable, "-m", "launch.cli", "chat", "--url", url],
                         cwd=ROOT, env=up_env(tmp_path), capture_output=True, timeout=30)
    assert out.returncode == 1
    err = out.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and url in err and "refused" in err, err


def started_with(state: Path) -> list[str]:
    """Live processes whose environment names this state dir (``agentia up``'s children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if f"AGENTIA_STATE_DIR={state}\0".encode() in (entry / "environ").read_bytes():
                    found.append(entry.name)
            except OSError:
                continue
    return found


def test_ctrl_c_while_starting_stops_at_once(tmp_path: Path) -> None:
    """SIGINT while children are still starting (the voice worker may take a minute): up stops
    within seconds, not after the child's start deadline, and leaves nothing running."""
    state, log = tmp_path / "state", tmp_path / "up.log"
    up = subprocess.Popen([sys.executable, "-m", "launch.cli", "up", "--port", "0",
                           "--api-port", "0"], cwd=ROOT, env=up_env(state),
                          stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                          stdin=subprocess.DEVNULL)
    try:
        text = wait_for(log, "redis      redis://", up, 60)
        redis_port = int(re.search(r"redis://127\.0\.0\.1:(\d+)/", text).group(1))  # type: ignore[union-attr]
        up.send_signal(signal.SIGINT)
        assert up.wait(20) == 0
        assert "AGENTIA_UP_READY" not in log.read_text()
        assert started_with(state) == []
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", redis_port), 1).close()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)


FAKE_PYTHON = """#!/bin/sh
# python3 -m venv DIR: a venv whose python is a pip that talks a lot and an agentia that echoes
[ "$1" = "--version" ] && echo "Python 3.11.7" && exit 0
[ "$1 $2" = "-m venv" ] || exit 3
mkdir -p "$3/bin"
cat >"$3/bin/python" <<'PY'
#!/bin/sh
echo "Collecting livekit-agents"
echo "python $*"
echo "SetuptoolsDeprecationWarning: editable install ********" >&2
exit ${FAKE_PIP_EXIT:-0}
PY
printf '#!/bin/sh\\necho "agentia $*"\\n' >"$3/bin/agentia"
chmod +x "$3/bin/python" "$3/bin/agentia"
"""


@pytest.mark.parametrize("pip_exit", [0, 1])
def test_dev_up_cold_says_what_it_does_and_keeps_pip_quiet(tmp_path: Path,
                                                           pip_exit: int) -> None:
    """``./dev up`` on a fresh clone, with stand-ins for python, pip, go and npm: it says what
    it does, pip's output (setuptools' warning block too) goes to .venv/pip.log, shown only
    when pip fails."""
    repo, fakes, home = tmp_path / "repo", tmp_path / "bin", tmp_path / "home"
    for d in (repo / "web", fakes, home):
        d.mkdir(parents=True)
    (repo / "clients" / "python").mkdir(parents=True)
    for name in ("dev", "pyproject.toml", "web/package-lock.json",
                 "clients/python/pyproject.toml"):
        (repo / name).write_bytes((ROOT / name).read_bytes())
    (repo / "dev").chmod(0o755)
    scripts = {"python": FAKE_PYTHON, "npm": "#!/bin/sh\necho 'added 12 packages'\n",
               "go": "#!/bin/sh\nmkdir -p \"$HOME/go/bin\" && touch \"$HOME/go/bin/server\" "
                     "&& chmod +x \"$HOME/go/bin/server\" && echo 'go: downloading'\n"}
    for name, text in scripts.items():
        (fakes / name).write_text(text)
        (fakes / name).chmod(0o755)
    env = {"PATH": f"{fakes}:/usr/bin:/bin", "HOME": str(home), "PYTHON": str(fakes / "python"),
           "FAKE_PIP_EXIT": str(pip_exit)}
    out = subprocess.run(["./dev", "up", "--port", "0"], cwd=repo, env=env, capture_output=True,
                         text=True, timeout=60)
    said = out.stdout + out.stderr
    assert "dev: creating .venv with Python 3.11.7" in said
    pip_log = (repo / ".venv" / "pip.log").read_text()
    assert "Collecting" in pip_log
    if not pip_exit:  # the SDK comes from clients/python in the same call, never an index
        assert "python -m pip install -q -e ./clients/python -e .[voice]" in pip_log, pip_log
    if pip_exit:  # the log's tail, then one line that says where the rest is
        assert out.returncode == 1
        assert said.rstrip().endswith("dev: pip install failed; the whole log is in "
                                      ".venv/pip.log")
        assert "SetuptoolsDeprecationWarning" in said and "agentia up" not in said
        return
    assert out.returncode == 0, said
    assert "dev: installing Python packages [voice] into .venv" in said
    assert "Setuptools" not in said and "Collecting" not in said and "go: downloading" not in said
    assert "dev: building the LiveKit server with Go (~3 min, once" in said
    assert "dev: npm ci in web/" in said
    assert out.stdout.strip().endswith("agentia up --port 0")


def test_chat_reads_up_json_only_while_its_process_lives(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from launch.chat import DEFAULT_URL, default_url

    monkeypatch.setenv("AGENTIA_STATE_DIR", str(tmp_path))
    assert default_url() == DEFAULT_URL  # no file
    url = "ws://127.0.0.1:1234/v1/ws"
    (tmp_path / "up.json").write_bytes(orjson.dumps({"url": url, "pid": os.getpid()}))
    assert default_url() == url
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "up.json").write_bytes(orjson.dumps({"url": url, "pid": dead.pid}))
    assert default_url() == DEFAULT_URL  # left behind by a killed run


def test_banner_command_in_the_default_state_dir_needs_no_url(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from launch import up

    monkeypatch.setattr(up, "STATE_DIR", Path(up.DEFAULT_STATE_DIR))
    command = shlex.split(up.chat_command("ws://127.0.0.1:1234/v1/ws"))
    assert command[-1] == "chat" and "--url" not in command
    assert os.access(command[0], os.X_OK)  # the console script beside this interpreter
