"""``agentia chat``: a small terminal client (streams replies, prints tool calls)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid

import orjson
import websockets

from agentia.settings import DEV_SECRET
from gateway.auth import mint


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


async def chat(url: str, user: str, session: str | None, messages: list[str] | None) -> None:
    token = mint(os.environ.get("AGENTIA_JWT_SECRET", DEV_SECRET), user, 3600)
    full = url + (f"?session={session}" if session else "")
    async with websockets.connect(full, additional_headers={"Authorization": f"Bearer {token}"},
                                  compression=None) as ws:
        welcome = orjson.loads(await ws.recv())
        print(f"connected to node {welcome['node']}, session {welcome['session']}", flush=True)
        if messages:
            for m in messages:
                print(f"> {m}")
                await _turn(ws, m)
            return
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            if line.strip():
                await _turn(ws, line.strip())


def main(url: str, user: str, session: str | None, messages: list[str] | None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(chat(url, user, session, messages))
