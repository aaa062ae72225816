"""``agentia chat``: a small terminal client (streams replies, prints tool calls).

Without ``--url`` it talks to the system ``agentia up`` runs from this directory (its
``up.json`` in the state dir), else to the default port. Ctrl-C quits at once, at the prompt or
mid-reply: stdin is read by the event loop (``add_reader``), never by a blocking thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from pathlib import Path

import orjson
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from agentia.settings import DEV_SECRET
from gateway.auth import mint

DEFAULT_URL = "ws://127.0.0.1:8765/v1/ws"
HINT = "Type a message and press Enter. Ctrl-C or Ctrl-D quits."


class ChatError(Exception):
    """Ends the chat with one line on stderr (no traceback) and exit status 1."""


def default_url() -> str:
    """The running ``agentia up``'s edge (its ``up.json``, if its PID is alive), else the
    default port."""
    path = Path(os.environ.get("AGENTIA_STATE_DIR", ".agentia")) / "up.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        state = orjson.loads(path.read_bytes())
        os.kill(int(state["pid"]), 0)  # a file left by a killed run names a dead PID
        return str(state["url"])
    return DEFAULT_URL


async def _turn(ws: websockets.ClientConnection, text: str) -> None:
    """Send one message and print the reply as it streams; returns at the turn's end."""
    await ws.send(orjson.dumps({"type": "send", "id": uuid.uuid4().hex, "text": text}).decode())
    turn = None
    while True:
        f = orjson.loads(await ws.recv())
        kind = f["type"]
        if kind == "ack":
            turn = f["offset"]
        elif kind == "error":
            print(f"\n[error {f['code']}] {f['message']}", flush=True)
            if f.get("ref") and turn is None:
                return
        elif f.get("turn") != turn:
            continue
        elif kind == "delta":
            print(f["text"], end="", flush=True)
        elif kind == "tool":
            print(f"[tool: {f['name']}] ", end="", flush=True)
        elif kind in ("reply", "cancelled", "turn_error"):
            extra = f" [{kind}: {f.get('message', '')}]" if kind != "reply" else ""
            print(extra, flush=True)
            return


class Lines:
    """stdin's lines, read by the event loop when the fd is readable; ``None`` at EOF. At
    most ``LIMIT`` bytes are read ahead (a long piped input waits in the pipe)."""

    LIMIT = 1 << 20

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno()
        self.buffer, self.eof = b"", False
        self.more = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        try:
            self.loop.add_reader(self.fd, self._readable)
            self.polled = True
        except PermissionError:  # a regular file (chat < file): epoll refuses, reads never block
            self.polled = False

    def _readable(self) -> None:
        chunk = os.read(self.fd, 65536)
        self.buffer += chunk
        if not chunk or len(self.buffer) > self.LIMIT:
            self.loop.remove_reader(self.fd)
        self.eof = not chunk
        self.more.set()

    async def get(self) -> str | None:
        while b"\n" not in self.buffer and not self.eof:
            self.more.clear()
            if len(self.buffer) > self.LIMIT:  # a line longer than the limit: take it as is
                break
            if self.polled:
                await self.more.wait()
            else:
                self._readable()
        if not self.buffer:
            return None
        line, _, self.buffer = self.buffer.partition(b"\n")
        if self.polled and not self.eof and len(self.buffer) <= self.LIMIT:
            self.loop.add_reader(self.fd, self._readable)  # replaces, never duplicates
        return line.decode(errors="replace")

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.fd)


async def _interactive(ws: websockets.ClientConnection) -> None:
    tty = sys.stdin.isatty()
    if tty:
        print(HINT, flush=True)
    lines = Lines()
    try:
        while True:
            if tty:
                print("> ", end="", flush=True)
            line = await lines.get()
            if line is None:
                return
            if line.strip():
                await _turn(ws, line.strip())
    finally:
        lines.close()


async def chat(url: str, user: str, session: str | None, messages: list[str] | None) -> None:
    token = mint(os.environ.get("AGENTIA_JWT_SECRET", DEV_SECRET), user, 3600)
    full = url + (f"?session={session}" if session else "")
    try:
        ws = await websockets.connect(full, compression=None, open_timeout=10,
                                      additional_headers={"Authorization": f"Bearer {token}"})
    except InvalidStatus as exc:
        raise ChatError(f"{url} refused the connection: HTTP {exc.response.status_code}"
                        ) from None
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        why = "connection refused" if isinstance(exc, ConnectionRefusedError) else str(exc)
        raise ChatError(f"cannot connect to {url}: {why or type(exc).__name__} "
                        "(is 'agentia up' running? pass --url)") from None
    async with ws:
        try:
            welcome = orjson.loads(await ws.recv())
            print(f"connected to node {welcome['node']}, session {welcome['session']}",
                  flush=True)
            if not messages:
                await _interactive(ws)
                return
            for m in messages:
                print(f"> {m}")
                await _turn(ws, m)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            reason = exc.rcvd.reason if exc.rcvd else "no close frame"
            raise ChatError(f"the connection closed: {code} {reason}".rstrip()) from None


def main(url: str | None, user: str, session: str | None, messages: list[str] | None) -> None:
    try:
        asyncio.run(chat(url or default_url(), user, session, messages))
    except KeyboardInterrupt:
        print(flush=True)  # the prompt's line ends; the shell's starts clean
    except ChatError as exc:
        print(f"\nagentia chat: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
