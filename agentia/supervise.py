"""Child processes that are restarted when they die: used by ``agentia up`` and by
``agentia gateway --processes N``. Children are ``agentia`` subcommands that print one READY
line (``AGENTIA_<KIND>_READY key=value ...``) on stdout once they serve.

Each child runs in its own process group (so a terminal's Ctrl-C reaches only us, and we stop
them in order) and is tied to us (:mod:`agentia.lifeline`): if we die, they get SIGTERM.
Stopping never depends on our stdout: :func:`say` swallows a closed pipe (``| tee`` killed by
the same Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import IO, Any, Protocol, TextIO

from agentia import lifeline, metrics


class StartError(RuntimeError):
    """A child exited, or did not print its READY line in time; the message is one line."""


class Stopped(Exception):
    """SIGINT or SIGTERM arrived while a child was starting."""


def say(text: str, stream: TextIO | None = None) -> None:
    """Print one line; never raise. A reader that went away (a pipe into ``tee`` that Ctrl-C
    killed) must not stop us from stopping our children: later output goes nowhere."""
    stream = stream or sys.stdout
    try:
        print(text, file=stream, flush=True)
    except (OSError, ValueError):  # BrokenPipeError, or a stream already closed
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())  # and the interpreter's flush at exit is quiet
            os.close(devnull)


def never() -> bool:
    return False


def spawn(args: list[str], env: Mapping[str, str], ready: str | tuple[str, ...],
          timeout: float = 60, stopping: Callable[[], bool] = never,
          **how: Any) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """Start ``agentia <args>`` and wait for its READY line (see :func:`start`)."""
    how.setdefault("what", f"'agentia {' '.join(args)}'")
    return start([sys.executable, "-m", "launch.cli", *args], env, ready, timeout, stopping,
                 **how)


def start(cmd: Sequence[str], env: Mapping[str, str], ready: str | tuple[str, ...],
          timeout: float = 60, stopping: Callable[[], bool] = never, *, what: str = "",
          cwd: str | os.PathLike[str] | None = None,
          stderr: int | IO[Any] | os.PathLike[str] | None = None,
          echo: IO[bytes] | None = None, supervised: bool = True,
          popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen
          ) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """Start ``cmd`` and wait for a stdout line starting with ``ready``: at most ``timeout``
    seconds, and no longer than a stop signal (checked every 0.2 s, whatever the child prints
    or not). Returns the child and the line's ``key=value`` pairs. What was read of stdout
    is copied to ``echo`` (a reader of ``proc.stdout`` takes over from there); ``stderr`` may
    be a path (appended to). ``supervised``: in its own process group and tied to
    us (:mod:`agentia.lifeline`); otherwise in ours and untied, as a test's children, which
    may be started from any thread (Linux's parent-death signal fires when the thread that
    started the child ends). ``popen``: a Popen subclass (the tests' zygote). On failure
    the child is killed and reaped, and :class:`StartError` (or :class:`Stopped`) raised."""
    with contextlib.ExitStack() as opened:  # a log path: the child keeps its own fd
        err = opened.enter_context(open(stderr, "ab")) if isinstance(stderr, os.PathLike) \
            else stderr
        proc = popen(list(cmd), env=dict(env), cwd=cwd, stdout=subprocess.PIPE,
                     stderr=err, stdin=subprocess.DEVNULL, start_new_session=supervised,
                     preexec_fn=lifeline.tied() if supervised else None)
    try:
        return proc, _ready_line(proc, what or f"'{' '.join(cmd)}'", ready,
                                 time.monotonic() + timeout, stopping, echo)
    except BaseException:
        if supervised:
            kill_group(proc)
        else:
            _kill(proc)
        raise


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _ready_line(proc: subprocess.Popen[bytes], what: str, ready: str | tuple[str, ...],
                deadline: float, stopping: Callable[[], bool],
                echo: IO[bytes] | None = None) -> dict[str, str]:
    assert proc.stdout is not None
    fd, pending = proc.stdout.fileno(), b""
    while time.monotonic() < deadline:
        if stopping():
            raise Stopped
        readable, _, _ = select.select([fd], [], [], 0.2)
        if not readable:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:  # stdout closed: it exited (or is about to); end its group, reap it
            for _ in range(50):
                if exited(proc):
                    break
                time.sleep(0.1)
            kill_group(proc)
            raise StartError(f"{what} exited with {proc.returncode} before it was ready; "
                             "see its log above")
        *lines, pending = (pending + chunk).split(b"\n")
        for i, line in enumerate(lines):
            if echo is not None:
                echo.write(line + b"\n")
            text = line.decode(errors="replace").strip()
            if text.startswith(ready):
                if echo is not None:  # what came with it is the reader's from now on
                    echo.write(b"".join(ln + b"\n" for ln in lines[i + 1:]) + pending)
                return dict(p.split("=", 1) for p in text.split()[1:] if "=" in p)
    raise StartError(f"{what} was not ready within its deadline; see its log above")


def exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the child has exited, without reaping it: while it is a zombie its PID (the
    process group's ID) cannot be reused, so :func:`kill_group` cannot hit a stranger."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of the child's process group (it and anything it started, e.g. a
    voice worker's job processes), then reap it."""
    if proc.returncode is None:  # not reaped yet: the group ID is still ours
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def stop_child(proc: subprocess.Popen[bytes] | None, grace_s: float = 10.0) -> None:
    """SIGTERM one child started alone (a LiveKit server, its SIP service), wait ``grace_s``
    for it, then SIGKILL it; reaped either way. Nothing to do for one already gone."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def stop_signals() -> Callable[[], bool]:
    """Catch SIGTERM and SIGINT; the returned function says whether one has arrived."""
    caught: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return lambda: bool(caught)


def stop_all(procs: list[subprocess.Popen[bytes]], grace_s: float = 15.0) -> None:
    """SIGTERM every process, wait ``grace_s`` (their drain), then SIGKILL what is left of
    each one's process group (a voice worker's job processes too)."""
    for p in procs:
        if not exited(p):  # os.kill: Popen.send_signal would reap a dead one (see exited)
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        while not exited(p) and time.monotonic() < deadline:
            time.sleep(0.05)
        kill_group(p)


class Child:
    """One supervised child: restarted with the same arguments (an edge keeps its port) when
    it dies, at most ``MAX_RESTARTS`` times a minute."""

    MAX_RESTARTS = 5

    def __init__(self, kind: str, args: list[str], env: dict[str, str], ready: str,
                 timeout: float = 60, stopping: Callable[[], bool] = never) -> None:
        self.kind, self.args, self.env, self.ready = kind, args, env, ready
        self.timeout, self.stopping = timeout, stopping
        self.restarts: list[float] = []
        self.proc, self.info = spawn(args, env, ready, timeout, stopping)

    def revive(self) -> bool:
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < 60] + [now]
        if len(self.restarts) > self.MAX_RESTARTS:
            return False
        kill_group(self.proc)
        metrics.process_exited(self.proc.pid, self.env.get("PROMETHEUS_MULTIPROC_DIR"))
        self.proc, self.info = spawn(self.args, self.env, self.ready, self.timeout,
                                     self.stopping)
        say(f"AGENTIA_UP_RESTARTED kind={self.kind} pid={self.proc.pid} "
            f"port={self.info.get('port', '')}")
        return True


class Supervised(Protocol):
    """What :func:`supervise` restarts: a :class:`Child`, or a server started its own way
    (``agentia up``'s LiveKit server)."""

    kind: str

    @property
    def proc(self) -> subprocess.Popen[bytes]: ...

    def revive(self) -> bool: ...


def supervise(children: Sequence[Supervised], stopping: Callable[[], bool]) -> None:
    while not stopping():
        for c in children:
            if exited(c.proc) and not stopping():
                kill_group(c.proc)  # what the dead one started, then reap it
                say(f"{c.kind} (pid {c.proc.pid}) exited with {c.proc.returncode}; "
                    "restarting it", sys.stderr)
                if not c.revive():
                    say(f"{c.kind} keeps dying; stopping everything", sys.stderr)
                    return
        time.sleep(0.2)
