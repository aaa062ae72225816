"""``agentia chat``: a small terminal client (streams replies, prints tool calls and handoffs,
asks for approvals).

Built on the Python SDK (``agentia_client``): it reconnects after an edge restart or crash and
resumes where it stopped, so a reply in progress goes on without lost or repeated text.
Without ``--url`` it talks to the system ``agentia up`` runs from this directory (its
``up.json`` in the state dir), else to the default port. Ctrl-C quits at once, at the prompt or
mid-reply: stdin is read by the event loop (``add_reader``), never by a blocking thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from agentia.settings import DEV_SECRET
from agentia_client import (
    AgentiaClient,
    ApprovalRequest,
    ApprovalResult,
    Backoff,
    Cancelled,
    Chunk,
    ClientError,
    ConnectError,
    Handoff,
    Partial,
    ReconnectFailed,
    Reply,
    RequestError,
    ServerClosed,
    SessionReset,
    ToolCall,
    ToolResult,
    TurnFailure,
    TurnStart,
)
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


RECONNECT = Backoff(base=0.25, cap=2.0, max_attempts=15, max_first_attempts=1)
"""Fail at once when nothing listens at start; later, keep trying for 15-30 s (an edge restart
takes seconds)."""


Ask = Callable[[str], Awaitable[str | None]]
"""Prints a question and returns the user's answer (None: no more input)."""


async def _turn(client: AgentiaClient, text: str, ask: Ask | None = None) -> None:
    """Send one message and print the reply as it streams; returns at the turn's end. An
    approval request is put to the user with ``ask`` (without it: another client of the
    session, e.g. the page, must answer)."""
    shown = ""  # the reply text printed for the current run of the turn
    try:
        async for ev in client.stream(text):
            if isinstance(ev, ToolCall | ToolResult | Handoff | ApprovalResult):
                _agent_event(ev)
            elif isinstance(ev, ApprovalRequest):
                await _approval(client, ev, ask)
            elif isinstance(ev, Chunk):
                print(ev.text, end="", flush=True)
                shown += ev.text
            elif isinstance(ev, Partial):  # the text so far, after a reconnect
                _catch_up(shown, ev.text)
                shown = ev.text
            elif isinstance(ev, TurnStart) and (ev.attempt > 1 or shown):
                print(f"\n[attempt {ev.attempt}] ", end="", flush=True)
                shown = ""
            elif isinstance(ev, Cancelled):
                _catch_up(shown, ev.text)
                print(" [cancelled]", flush=True)
            elif isinstance(ev, TurnFailure):
                print(f" [turn_error: {ev.code}: {ev.message}]", flush=True)
            elif isinstance(ev, Reply):  # the whole text: the rest, if it ended while away
                _catch_up(shown, ev.text)
                print(flush=True)
    except RequestError as exc:  # refused for good (e.g. too long): say so, keep chatting
        print(f"\n[error {exc.code}] {exc.message}", flush=True)
    except SessionReset:  # Redis lost the session while the turn ran: the chat goes on
        print("\n[the session was re-created: this reply is lost]", flush=True)


def _agent_event(ev: ToolCall | ToolResult | Handoff | ApprovalResult) -> None:
    if isinstance(ev, ToolCall):
        args = "" if ev.private or not ev.call_id else orjson.dumps(ev.arguments).decode()
        print(f"[tool: {ev.name}{' ' + args if args else ''}] ", end="", flush=True)
    elif isinstance(ev, ToolResult) and ev.is_error:
        print(f"[{ev.name} failed] ", end="", flush=True)
    elif isinstance(ev, Handoff):
        print(f"[{ev.from_agent} → {ev.to_agent}] ", end="", flush=True)
    elif isinstance(ev, ApprovalResult):
        verdict = "approved" if ev.approved else "rejected"
        print(f"[{verdict} by {ev.by}] ", end="", flush=True)


async def _approval(client: AgentiaClient, ev: ApprovalRequest, ask: Ask | None) -> None:
    """Put an approval request to the user (y approves, anything else rejects)."""
    what = f"{ev.name} {orjson.dumps(ev.arguments).decode()}"
    if ask is None:
        print(f"\n[approval needed: {what}; answer it from another client]", flush=True)
        return
    answer = await ask(f"\n[approve {what}? y/N] ")
    if answer is None:
        print("[no answer: the request stays open]", flush=True)
        return
    try:
        await client.approve(ev.call_id, answer.strip().lower() in ("y", "yes"))
    except RequestError as exc:  # no_such_approval: answered elsewhere, or timed out
        print(f"[not recorded: {exc.code}]", flush=True)


def _catch_up(shown: str, text: str) -> None:
    """Print what ``text`` (a partial, or the turn's final text) adds to what is on the
    screen; start a new line when it does not continue it."""
    if text.startswith(shown):
        print(text[len(shown):], end="", flush=True)
    else:
        print("\n" + text, end="", flush=True)


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


async def _interactive(client: AgentiaClient) -> None:
    tty = sys.stdin.isatty()
    if tty:
        print(HINT, flush=True)
    lines = Lines()

    async def ask(question: str) -> str | None:
        print(question, end="", flush=True)
        return await lines.get()

    try:
        while True:
            if tty:
                print("> ", end="", flush=True)
            line = await lines.get()
            if line is None:
                return
            if line.strip():
                await _turn(client, line.strip(), ask)
    finally:
        lines.close()


def _why(exc: ClientError, url: str, connected: bool) -> str:
    """One line for a client error that ends the chat."""
    if isinstance(exc, ConnectError):  # AuthenticationError too: an HTTP refusal
        return f"{url} refused the connection: HTTP {exc.status}"
    if isinstance(exc, ReconnectFailed) and connected:
        return f"lost the connection to {url}: no edge answered {exc.attempts} attempts"
    if isinstance(exc, ReconnectFailed) and (isinstance(exc.last, ConnectionRefusedError)
                                             or "Connect call failed" in str(exc.last)):
        return f"cannot connect to {url}: connection refused (is 'agentia up' running? pass --url)"
    if isinstance(exc, ReconnectFailed):
        return f"cannot connect to {url}: {exc.last or exc} (is 'agentia up' running? pass --url)"
    if isinstance(exc, ServerClosed):
        return f"the connection closed: {exc.code} {exc.reason}".rstrip()
    return str(exc)


async def chat(url: str, user: str, session: str | None, messages: list[str] | None) -> None:
    token = mint(os.environ.get("AGENTIA_JWT_SECRET", DEV_SECRET), user, 3600)
    try:  # a quit closes with 1000 at once; an edge that does not answer gets 2 s
        client = AgentiaClient(url, token, session, backoff=RECONNECT, open_timeout=10,
                               close_timeout=2)
    except ValueError as exc:  # not a ws:// URL, or a session id the edge would refuse
        raise ChatError(str(exc)) from None
    try:
        async with client:
            print(f"connected to node {client.node}, session {client.session}", flush=True)
            if not messages:
                await _interactive(client)
                return
            for m in messages:
                print(f"> {m}")
                await _turn(client, m)
    except ClientError as exc:
        raise ChatError(_why(exc, url, client.stats["connections"] > 0)) from None


def with_agent(url: str, agent: str | None) -> str:
    """``url`` asking for ``agent`` (``?agent=``, docs/agents.md); the SDK keeps it on every
    reconnect."""
    if not agent:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "agent"] + [("agent", agent)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def main(url: str | None, user: str, session: str | None, messages: list[str] | None,
         agent: str | None = None) -> None:
    try:
        asyncio.run(chat(with_agent(url or default_url(), agent), user, session, messages))
    except KeyboardInterrupt:
        print(flush=True)  # the prompt's line ends; the shell's starts clean
    except ChatError as exc:
        print(f"\nagentia chat: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
