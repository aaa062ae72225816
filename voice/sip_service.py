"""A private LiveKit SIP service (``~/go/bin/livekit-sip``, built by ``ops/sip/build.sh``) on free
ports, beside a :class:`voice.livekit_server.LiveKitServer` started with the same Redis: the two
talk over it (psrpc). docs/voice.md, "Telephony"."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from agentia import lifeline
from agentia.supervise import stop_child
from voice.livekit_server import LiveKitServer, free_port

CANDIDATES = (os.path.expanduser("~/go/bin/livekit-sip"), "/root/go/bin/livekit-sip",
              "livekit-sip")
"""Where ``ops/sip/build.sh`` puts it, or PATH."""


def find_binary() -> str | None:
    env = os.environ.get("AGENTIA_LIVEKIT_SIP_BIN")
    for cand in ((env,) if env else CANDIDATES):
        path = shutil.which(cand) if cand else None
        if path:
            return path
    return None


def free_udp_ports(n: int) -> int:
    """The first of ``n`` consecutive UDP ports free on 127.0.0.1 now (best effort)."""
    for _ in range(50):
        first = free_port(socket.SOCK_DGRAM)
        if first + n > 65535:
            continue
        socks = []
        try:
            for p in range(first, first + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free UDP ports")


class SipService:
    """livekit-sip listening for SIP on ``127.0.0.1:sip_port`` (UDP and TCP), its RTP on
    ``rtp_ports`` ports from ``rtp_port``; started with its own config, stopped by PID.
    ``sip_port`` 0: a free one. ``tied``: it gets SIGTERM when we die (``agentia up``)."""

    def __init__(self, binary: str, workdir: Path, livekit: LiveKitServer,
                 rtp_ports: int = 20, sip_port: int = 0, tied: bool = False) -> None:
        if not livekit.redis:
            raise ValueError("the LiveKit server needs a Redis (LiveKitServer(redis=...))")
        self.binary, self.workdir, self.livekit = binary, workdir, livekit
        self.sip_port = sip_port or free_port(socket.SOCK_DGRAM)
        self.tied = tied  # SIGTERM from the kernel when we die (agentia.lifeline)
        self.rtp_port = free_udp_ports(rtp_ports)
        self.rtp_ports = rtp_ports
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        lk = self.livekit
        return (
            f"api_key: {lk.key}\napi_secret: {lk.secret}\nws_url: {lk.url}\n"
            f"redis:\n  address: {lk.redis}\n"
            f"sip_port: {self.sip_port}\nhealth_port: {self.health_port}\n"
            f"rtp_port: {self.rtp_port}-{self.rtp_port + self.rtp_ports - 1}\n"
            # loopback only, no STUN lookup of a public address
            "use_external_ip: false\nnat_1_to_1_ip: 127.0.0.1\nlisten_ip: 127.0.0.1\n"
            # above this share of the machine's CPU it reports itself under load (health 429,
            # outbound calls refused): on a small shared box that is most of the time, and the
            # voice worker bounds its own calls
            "max_cpu_utilization: 1.0\n"
            "logging:\n  level: info\n")

    def start(self, timeout: float = 15.0) -> SipService:
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "sip.yaml"
        path.write_text(self.config())
        mode = "ab" if self.proc is not None else "wb"  # a restart keeps the dead one's log
        with open(self.workdir / "sip.log", mode) as log:  # the child keeps its own fd
            self.proc = subprocess.Popen([self.binary, "--config", str(path)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True,
                                         preexec_fn=lifeline.tied() if self.tied else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"livekit-sip exited; see {self.workdir / 'sip.log'}")
            if self._healthy():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"livekit-sip was not healthy within {timeout} s")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/", timeout=1):
                return True
        except urllib.error.HTTPError:  # answering, not ready (503) or under load (429)
            return False
        except OSError:
            return False

    def log(self) -> str:
        return (self.workdir / "sip.log").read_text(errors="replace")

    def stop(self) -> None:
        stop_child(self.proc)
