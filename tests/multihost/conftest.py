"""Several hosts on one machine: network namespaces on a private /24, joined by a bridge.

Each host is a network namespace with its own address (``10.213.N.x``) and a veth whose other
end is a port of a bridge in the root namespace. The root namespace is the clients' host and
Redis's, which listens on the bridge's address (``10.213.N.1``), so every host reaches it over
its veth. Edges and workers run in their host's namespace through ``ip netns exec`` (which
execs, so the PID we hold is the agent process itself). Every namespace and link is named
with a random suffix and removed at teardown, even when the test or the set-up failed.

Needs root and iproute2's ``ip netns``: without them the tests skip, unless ``CI`` is set
(CI runs as root), where they fail.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from launch.redis_server import RedisServer
from tests.conftest import Cluster, Proc

IP = shutil.which("ip") or "/usr/sbin/ip"
EDGE_PORT = 8765
"""Every edge listens on the same port: each host has its own address and port space."""
HOST_NUMBERS = {"a": 10, "b": 11, "c": 12, "w": 20}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "multihost: hosts in network namespaces (root, ip netns)")


class NetUnavailable(RuntimeError):
    """This machine cannot make network namespaces (not root, no iproute2, no privilege)."""


def ip(*args: str) -> str:
    try:
        done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=10)
    except OSError as exc:
        raise NetUnavailable(f"cannot run {IP}: {exc}") from exc
    if done.returncode != 0:
        raise NetUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Host:
    """One machine: a network namespace, its address, the root-side end of its cable."""

    name: str
    ns: str
    addr: str
    veth: str
    procs: list[Proc] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://{self.addr}:{EDGE_PORT}/v1/ws"

    def exec_prefix(self) -> list[str]:
        return [IP, "netns", "exec", self.ns]


def free_subnet() -> str:
    """A ``10.213.N`` that no interface or route here uses yet (another run may hold one)."""
    used = ip("-4", "-o", "addr", "show") + ip("-4", "route", "show", "table", "all")
    free = [n for n in range(256) if f"10.213.{n}." not in used]
    if not free:
        raise NetUnavailable("no free 10.213.N.0/24 subnet")
    return f"10.213.{secrets.choice(free)}"


class Net:
    """A bridge in the root namespace and one namespace per host, removed by :meth:`down`."""

    def __init__(self) -> None:
        self.tag = "agm" + secrets.token_hex(3)  # interface names stay under 16 characters
        self.subnet = ""
        self.bridge = f"{self.tag}br"
        self.hosts: dict[str, Host] = {}
        self._links: list[str] = []
        self._namespaces: list[str] = []

    @property
    def gateway(self) -> str:
        """The bridge's address: the root namespace (clients, Redis) as the hosts see it."""
        return f"{self.subnet}.1"

    def up(self) -> Net:
        ip("link", "add", self.bridge, "type", "bridge")
        self._links.append(self.bridge)
        for _ in range(5):  # a run starting at the same moment may have picked the same N
            self.subnet = free_subnet()
            ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            mine = f"inet {self.subnet}."
            if sum(mine in line for line in ip("-4", "-o", "addr", "show").splitlines()) == 1:
                break
            ip("addr", "del", f"{self.gateway}/24", "dev", self.bridge)
        else:
            raise NetUnavailable("no 10.213.N.0/24 subnet stayed free")
        ip("link", "set", self.bridge, "up")
        return self

    def add_host(self, name: str) -> Host:
        host = Host(name, f"{self.tag}-{name}", f"{self.subnet}.{HOST_NUMBERS[name]}",
                    f"{self.tag}{name}")
        ip("netns", "add", host.ns)
        self._namespaces.append(host.ns)
        ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.ns)
        self._links.append(host.veth)
        ip("link", "set", host.veth, "master", self.bridge, "up")
        ip("-n", host.ns, "addr", "add", f"{host.addr}/24", "dev", "eth0")
        ip("-n", host.ns, "link", "set", "eth0", "up")
        ip("-n", host.ns, "link", "set", "lo", "up")
        self.hosts[name] = host
        return host

    def cut(self, host: Host) -> None:
        """Pull the host's cable: nothing it sends arrives any more, not even a RST."""
        ip("link", "set", host.veth, "down")

    def down(self) -> list[str]:
        """Remove what we made (links first, then namespaces); return what could not be."""
        errors = []
        for name in reversed(self._links):
            try:
                ip("link", "del", name)
            except NetUnavailable as exc:
                errors.append(str(exc))
        for ns in reversed(self._namespaces):
            try:
                ip("netns", "del", ns)
            except NetUnavailable as exc:
                errors.append(str(exc))
        self._links.clear()
        self._namespaces.clear()
        return errors


class Hosts(Cluster):
    """A :class:`Cluster` whose edges and workers each live on a host of :class:`Net`."""

    def __init__(self, net: Net, redis_url: str, prefix: str) -> None:
        super().__init__(redis_url, prefix)
        self.net = net
        self.env["AGENTIA_DRAIN_S"] = "2"

    def __getitem__(self, name: str) -> Host:
        return self.net.hosts[name]

    def edge_on(self, host: Host, **env: str) -> Proc:
        p = Proc(["gateway", "--host", host.addr, "--port", str(EDGE_PORT)],
                 {**self.env, **env}, "AGENTIA_EDGE_READY", wrapper=host.exec_prefix())
        self.procs.append(p)
        self.edges.append(p)
        host.procs.append(p)
        return p

    def worker_on(self, host: Host, agent: str = "tests.agents_fixtures:fast",
                  **env: str) -> Proc:
        p = Proc(["worker", "--agent", agent], {**self.env, **env}, "AGENTIA_WORKER_READY",
                 wrapper=host.exec_prefix())
        self.procs.append(p)
        host.procs.append(p)
        return p

    @staticmethod
    def together(*starts: Callable[[], Proc]) -> list[Proc]:
        """Start processes side by side (a worker's imports take seconds); in call order."""
        with ThreadPoolExecutor(len(starts)) as pool:
            return [f.result() for f in [pool.submit(start) for start in starts]]

    def kill_host(self, host: Host) -> None:
        """The host dies at once: its cable is cut first, so no FIN or RST gets out, then
        every process of it gets SIGKILL (by PID)."""
        self.net.cut(host)
        for p in host.procs:
            p.kill()


def _refuse(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"multi-host tests cannot run in CI: {reason}")
    pytest.skip(f"multi-host tests need root and ip netns: {reason}")


@pytest.fixture
def hosts(tmp_path: Path, prefix: str) -> Iterator[Hosts]:
    """Hosts a, b, c (edges) and w (workers); Redis on the bridge; all torn down after."""
    if os.geteuid() != 0:
        _refuse("not running as root")
    try:
        net = Net()
    except NetUnavailable as exc:
        _refuse(str(exc))
    redis: RedisServer | None = None
    cluster: Hosts | None = None
    try:
        try:
            net.up()
            for name in HOST_NUMBERS:
                net.add_host(name)
        except NetUnavailable as exc:
            _refuse(str(exc))
        redis = RedisServer(tmp_path / "redis", host=net.gateway).start()
        cluster = Hosts(net, redis.url, prefix)
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop()
        if redis is not None:
            redis.stop()
        leftovers = net.down()
    assert leftovers == [], leftovers
    assert cluster is not None and cluster.edge_tracebacks() == []
