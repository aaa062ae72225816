"""A worker "zygote" for tests: one process per test session that has imported the heavy
third-party modules of our processes (the OpenAI Agents SDK: ~2 CPU-s per worker start) and
forks a ``python -m launch.cli ARGS`` child per request, ready in ~0.1 s.

The test side (:class:`Forked`) is a ``subprocess.Popen``: stdin/stdout/stderr are made by
Popen as usual and handed to the zygote with SCM_RIGHTS; the zygote forks, the child takes
them as fds 0-2, sets the environment, the working directory and ``sys.argv``, and runs
``launch.cli`` as ``__main__`` (as ``python -m`` does), then exits the way the interpreter does
(non-daemon threads joined, atexit handlers, streams flushed; SystemExit's code, 1 and a
traceback for an exception). The zygote is its parent: it reaps it (a pidfd per child) and sends
the exit status (``Popen.returncode``'s convention) on the request's connection, which
``poll``/``wait`` read. Signals go to the PID as before.

Only modules that read no environment we vary are imported before the fork: no module of ours
and not ``prometheus_client`` (it reads ``PROMETHEUS_MULTIPROC_DIR`` when imported, and each
Cluster has its own). The variables the preloaded modules read when imported (IMPORT_ENV)
must be equal in the request, else the caller starts a plain process (:func:`eligible`).
No thread, event loop or connection exists in the zygote when it forks (checked at start).

Run as ``python -m tests.zygote FD``: FD is a listening Unix socket made by the test process;
the zygote exits when its stdin (a pipe from the test process) closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from typing import IO, Any

PRELOAD = ("agents", "openai", "redis.asyncio", "websockets.asyncio.server", "fastapi",
           "uvicorn", "uvloop", "picows", "orjson", "jwt", "pydantic")
"""Imported once in the zygote; each reads only IMPORT_ENV when imported. Not ``a2a.server``:
it imports grpc, which must not be imported before a fork (its fork handlers; Dapr memory
uses it)."""
FORBIDDEN = ("prometheus_client", "grpc", "agentia", "sessions", "gateway", "control", "launch",
             "voice")
"""Must not be imported before a fork: they read per-test settings or make metrics at import,
or are not fork-safe once used."""
IMPORT_ENV = ("PYTHON", "OPENAI_LOG", "OPENAI_API_TYPE", "OPENAI_API_VERSION", "OPENAI_AGENTS_",
              "AZURE_OPENAI_ENDPOINT", "OTEL_PYTHON_", "OTEL_PROPAGATORS", "WEBSOCKETS_",
              "PYDANTIC_", "DEFER_PYDANTIC_BUILD", "LANG", "LC_", "SSLKEYLOGFILE", "LD_",
              "AIOHTTP_", "FROZENLIST_", "MULTIDICT_", "PROPCACHE_", "YARL_", "PSUTIL_")
"""Prefixes of the variables read at interpreter start or when PRELOAD is imported (found by
wrapping ``os.environ.get``/``os.getenv`` while importing PRELOAD: agents/_debug.py,
openai/__init__.py, openai/_utils/_logs.py, opentelemetry.context, websockets/http11.py, ...)."""
COMMANDS = frozenset({"gateway", "worker", "api", "webhooks", "dapr-publish"})
"""``agentia`` subcommands the zygote serves (not voice: LiveKit Agents starts job processes
and threads of its own; not up: a supervisor of exec'd children)."""
READY_S = 120
"""How long a request may wait for the zygote (its imports come first on a busy machine)."""
_HEADER = struct.Struct("!I")


def import_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(IMPORT_ENV)}


def read_line(conn: socket.socket, timeout: float | None) -> bytes | None:
    """One short line from ``conn`` (b"" at end of stream), or None after ``timeout``."""
    line = b""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not select.select([conn], [], [], left)[0]:
            if line:  # the rest of a started line comes at once
                continue
            return None
        chunk = conn.recv(1)
        if not chunk:
            return b""
        line += chunk
    return line


# -- the zygote process ---------------------------------------------------------------------

def preload() -> None:
    for name in PRELOAD:
        __import__(name)
    early = sorted({m.split(".")[0] for m in sys.modules} & set(FORBIDDEN))
    threads = len(os.listdir("/proc/self/task"))  # native threads too
    if early or threads != 1:
        raise SystemExit(f"zygote: PRELOAD imported {early} or started {threads - 1} threads")


def _recv_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    conn.settimeout(10)
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
    while len(data) < _HEADER.size or len(data) < _HEADER.size + _HEADER.unpack_from(data)[0]:
        more = conn.recv(65536)
        if not more:
            raise EOFError("request cut short")
        data += more
    size = _HEADER.unpack_from(data)[0]
    return json.loads(data[_HEADER.size:_HEADER.size + size]), fds


def _exit_code(code: object) -> int:
    """The interpreter's rule for SystemExit's argument."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _run_child(req: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: become ``python -m launch.cli ARGV``; never returns."""
    code, interrupted = 1, False
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in set(fds) - {0, 1, 2}:
            os.close(fd)
        if req["setsid"]:
            os.setsid()
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        sys.argv = [req["argv0"], *req["args"]]
        sys.path[0] = req["cwd"]
        try:
            runpy.run_module("launch.cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except KeyboardInterrupt:
            traceback.print_exc()
            interrupted = True
        except BaseException:  # the interpreter prints it and exits with 1
            sys.excepthook(*sys.exc_info())
        threading._shutdown()  # type: ignore[attr-defined]  # joins non-daemon threads
        import atexit

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                code = code or 120
        if interrupted:  # as the interpreter: die of SIGINT
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        os._exit(code)


class Zygote:
    def __init__(self, listener: socket.socket, lifeline: int) -> None:
        self.listener = listener
        self.lifeline = lifeline
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, "accept")
        self.sel.register(lifeline, selectors.EVENT_READ, "lifeline")
        self.children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, conn)

    def serve(self) -> None:
        while True:
            for key, _ in self.sel.select():
                if key.data == "lifeline":
                    if not os.read(self.lifeline, 1):
                        return
                elif key.data == "accept":
                    self._accept()
                else:
                    self._reap(key.fd)

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        try:
            req, fds = _recv_request(conn)
        except (OSError, EOFError, ValueError) as exc:
            print(f"zygote: bad request: {exc!r}", file=sys.stderr, flush=True)
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._close_in_child(conn)
            _run_child(req, fds)
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = (pid, conn)
        self.sel.register(pidfd, selectors.EVENT_READ, "child")
        with contextlib.suppress(OSError):  # the caller gave up; the child is still reaped
            conn.sendall(f"P {pid}\n".encode())

    def _close_in_child(self, conn: socket.socket) -> None:
        self.sel.close()
        self.listener.close()
        os.close(self.lifeline)
        for pidfd, (_, other) in self.children.items():
            os.close(pidfd)
            other.close()
        conn.close()

    def _reap(self, pidfd: int) -> None:
        pid, conn = self.children.pop(pidfd)
        self.sel.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        with contextlib.suppress(OSError):
            conn.sendall(f"X {os.waitstatus_to_exitcode(status)}\n".encode())
        conn.close()


def main() -> None:
    listener = socket.socket(fileno=int(sys.argv[1]))
    lifeline = os.dup(0)
    preload()
    Zygote(listener, lifeline).serve()


# -- the test process ------------------------------------------------------------------------

class ZygoteGone(Exception):
    """The zygote did not take the request (it died, or never started)."""


class Forked(subprocess.Popen[bytes]):
    """A Popen whose child is forked by the zygote at ``address`` (one of ``args`` is
    ``launch.cli``; the rest after it are the command's arguments). If the zygote cannot be
    reached, the command is started the usual way."""

    def __init__(self, args: list[str], *, zygote: Client, **kw: Any) -> None:
        self._zygote = zygote
        self._conn: socket.socket | None = None
        self._status_lock = threading.Lock()
        super().__init__(args, **kw)

    def _execute_child(self, args: Any, executable: Any, preexec_fn: Any, close_fds: Any,
                       pass_fds: Any, cwd: Any, env: Any, startupinfo: Any,
                       creationflags: Any, shell: Any, p2cread: int, p2cwrite: int,
                       c2pread: int, c2pwrite: int, errread: int, errwrite: int,
                       *rest: Any) -> None:
        start_new_session = rest[-2]
        fds = [fd if fd != -1 else i for i, fd in enumerate((p2cread, c2pwrite, errwrite))]
        i = list(args).index("launch.cli")
        req = {"argv0": self._zygote.cli_path, "args": list(args[i + 1:]),
               "env": dict(env), "cwd": os.fspath(cwd), "setsid": bool(start_new_session)}
        try:
            self._conn, self.pid = self._zygote.fork(req, fds)
        except ZygoteGone:
            super()._execute_child(  # type: ignore[misc]
                args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo,
                creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread,
                errwrite, *rest)
            return
        self._child_created = True
        self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite,  # type: ignore[attr-defined]
                             errread, errwrite)

    def _status(self, timeout: float | None) -> int | None:
        """The exit status once the zygote sent it (waiting up to ``timeout``)."""
        conn = self._conn
        assert conn is not None
        with self._status_lock:
            if self.returncode is None:
                try:
                    line = read_line(conn, timeout)
                except OSError:
                    line = b""
                if line is None:
                    return None
                # no line: the zygote died before the child; its status is lost
                self.returncode = int(line.split()[1]) if line.startswith(b"X ") else 255
                conn.close()
            return self.returncode

    def _internal_poll(self, _deadstate: Any = None, **_: Any) -> int | None:
        if self._conn is None:
            return super()._internal_poll(_deadstate)  # type: ignore[misc, no-any-return]
        return self._status(0)

    def _wait(self, timeout: float | None) -> int:
        if self._conn is None:
            return super()._wait(timeout)  # type: ignore[misc, no-any-return]
        code = self._status(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code


class Client:
    """The test process's handle on its zygote, started at the first request."""

    def __init__(self, root: str, env: Mapping[str, str], log: IO[bytes]) -> None:
        self.root = root
        self.log = log
        self.env = {**env, "PYTHONUNBUFFERED": "1"}
        self.cli_path = os.path.join(root, "launch", "cli.py")
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._address = ""

    def eligible(self, args: list[str], env: Mapping[str, str], cwd: str) -> bool:
        """Whether the zygote may start ``launch.cli ARGS`` with ``env`` in ``cwd``."""
        return (bool(args) and args[0] in COMMANDS and os.fspath(cwd) == self.root
                and import_env(env) == import_env(self.env))

    def _start(self) -> str:
        with self._lock:
            if self._proc is None:
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._address = f"\0agentia-zygote-{os.getpid()}-{id(self)}"
                listener.bind(self._address)
                listener.listen(64)
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "tests.zygote", str(listener.fileno())],
                    env=self.env, cwd=self.root, stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL, stderr=self.log, pass_fds=(listener.fileno(),))
                listener.close()
            if self._proc.poll() is not None:
                raise ZygoteGone(f"the zygote exited with {self._proc.returncode}")
            return self._address

    def fork(self, req: dict[str, Any], fds: list[int]) -> tuple[socket.socket, int]:
        """(the connection that will carry the exit status, the child's PID)."""
        body = json.dumps(req).encode()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self._start())
            socket.send_fds(conn, [_HEADER.pack(len(body)) + body], fds)
            # the zygote's imports, on a busy machine, come first
            line = read_line(conn, READY_S)
            if not line or not line.startswith(b"P "):
                raise ZygoteGone("the zygote closed the request")
            return conn, int(line.split()[1])
        except (OSError, ZygoteGone) as exc:
            conn.close()
            print(f"zygote: {exc!r}; starting the process without it", file=sys.stderr)
            raise ZygoteGone(str(exc)) from exc

    def stop(self) -> None:
        with self._lock:
            if self._proc is not None:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
                try:
                    self._proc.wait(15)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                self._proc = None


if __name__ == "__main__":
    main()
