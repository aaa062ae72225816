"""A private LiveKit server (``~/go/bin/server`` or ``livekit-server`` on PATH) on free ports,
for ``agentia up`` and the tests. Build it with
``go install github.com/livekit/livekit-server/cmd/server@v1.13.5`` (``./dev`` does)."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import jwt

from agentia import lifeline
from agentia.supervise import stop_child

WARM_UP_ROOM = "agentia-warm-up"
"""The room named in :meth:`LiveKitServer.warm_up`'s token: validated, never created."""
WARM_UP_TIMEOUT_S = 10.0
"""Bound on the warm-up request (0.27-0.63 s measured at load average 10 on two cores)."""

CANDIDATES = (os.path.expanduser("~/go/bin/server"), "/root/go/bin/server", "livekit-server")
"""Where ``go install github.com/livekit/livekit-server/cmd/server@v1.13.5`` puts it, or PATH."""


def find_binary() -> str | None:
    env = os.environ.get("AGENTIA_LIVEKIT_SERVER_BIN")
    for cand in ((env,) if env else CANDIDATES):
        path = shutil.which(cand) if cand else None
        if path:
            return path
    return None


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveKitServer:
    """Started with its own config (ports, one API key pair), stopped by PID."""

    def __init__(self, binary: str, workdir: Path, target_load: float = 2.0,
                 port: int = 0, tied: bool = False, redis: str = "",
                 webhook_url: str = "") -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.tied = tied  # SIGTERM from the kernel when we die (agentia.lifeline)
        # host:port of a Redis for LiveKit's own routing and psrpc (the SIP service reaches
        # the server through it); "" runs it alone, in memory. Give each server a Redis of
        # its own: LiveKit nodes on one Redis form one cluster.
        self.redis = redis
        self.key = "agentia"
        self.target_load = target_load
        # where it POSTs its signed webhooks (the control plane's voice/webhooks.py: the calls
        # of a voice worker that died are ended there); "" posts none
        self.webhook_url = webhook_url
        self.secret = secrets.token_hex(24)  # the server refuses secrets under 32 characters
        self.proc: subprocess.Popen[bytes] | None = None
        self.warmed_s = -1.0
        """What :meth:`warm_up` took at the last start (-1.0: it failed)."""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> LiveKitServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "livekit.yaml"
        config.write_text(
            f"port: {self.port}\nbind_addresses: [127.0.0.1]\n"
            f"rtc:\n  tcp_port: {free_port()}\n  udp_port: {free_port(socket.SOCK_DGRAM)}\n"
            "  use_external_ip: false\n  node_ip: 127.0.0.1\n"
            f"keys:\n  {self.key}: {self.secret}\nlogging:\n  level: info\n"
            # The server skips a worker that reports a load above target_load (0.7 by
            # default) and never retries: on a busy small box calls were not dispatched.
            # The voice worker's own AGENTIA_VOICE_LOAD_THRESHOLD decides instead.
            f"agents:\n  target_load: {self.target_load}\n"
            + (f"redis:\n  address: {self.redis}\n" if self.redis else "")
            + (f"webhook:\n  api_key: {self.key}\n  urls: [{self.webhook_url}]\n"
               if self.webhook_url else ""))
        mode = "ab" if self.proc is not None else "wb"  # a restart keeps the dead one's log
        with open(self.workdir / "livekit.log", mode) as log:  # the child keeps its own fd
            self.proc = subprocess.Popen([self.binary, "--config", str(config)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True,
                                         preexec_fn=lifeline.tied() if self.tied else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"livekit-server exited; see {self.workdir / 'livekit.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"livekit-server did not answer within {timeout} s")
        self.warmed_s = self.warm_up()
        return self

    def warm_up(self) -> float:
        """Pay a fresh server's first-browser cost now, not at a user's first Talk click:
        seconds taken, or -1.0 if it failed (the server works anyway, the first call is
        slower).

        LiveKit 1.13.5 builds its User-Agent parser (uap-go: its YAML of rules read, rewritten
        and compiled into regexes) at the first join of a browser client (JS SDK), never for
        the Python/Rust SDK's (its pkg/service/utils.go, ``AugmentClientInfo``): 0.14 s on an
        idle core, 0.27-0.63 s at load average 10, inside that first caller's
        ``room.connect``. ``/rtc/validate`` with ``sdk=js`` runs the same join checks and
        client parsing without making a room or a participant (docs/voice.md, "In the
        browser")."""
        now = int(time.time())
        token = jwt.encode({"iss": self.key, "sub": "agentia-warm-up", "nbf": now - 5,
                            "exp": now + 60,
                            "video": {"roomJoin": True, "room": WARM_UP_ROOM}},
                           self.secret, algorithm="HS256")
        query = urllib.parse.urlencode({"access_token": token, "sdk": "js"})
        started = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/rtc/validate?{query}",
                                        timeout=WARM_UP_TIMEOUT_S) as r:
                r.read()
        except OSError:
            return -1.0
        return time.monotonic() - started

    def stop(self) -> None:
        stop_child(self.proc)
