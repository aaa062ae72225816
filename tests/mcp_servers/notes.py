"""A small real MCP server for the tests: notes kept in memory, a slow tool and a failing one.

    python -m tests.mcp_servers.notes               # stdio (the worker starts it)
    python -m tests.mcp_servers.notes --http PORT   # streamable HTTP at http://127.0.0.1:PORT/mcp

Over HTTP it prints ``NOTES_READY port=N pid=P`` once it listens (``--http 0`` picks a port).
"""

from __future__ import annotations

import argparse
import os
import socket

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server: MCPServer = MCPServer("notes", log_level="WARNING")
NOTES: list[str] = []


@server.tool()
def add_note(text: str) -> str:
    """Keep a note."""
    NOTES.append(text)
    return f"noted #{len(NOTES)}: {text}"


@server.tool()
def list_notes() -> str:
    """Every note kept so far, oldest first."""
    return "; ".join(NOTES) or "no notes"


@server.tool()
async def slow(seconds: float) -> str:
    """Answer after ``seconds`` (for timeouts)."""
    await anyio.sleep(seconds)
    return f"slept {seconds:g} s"


@server.tool()
def fail(message: str) -> str:
    """Always fails with ``message`` (an error result the model sees)."""
    raise ToolError(message)


@server.tool()
def pid() -> str:
    """This server's process id (the tests check the worker ends it)."""
    return str(os.getpid())


async def serve_http(port: int) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    app = server.streamable_http_app()
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    print(f"NOTES_READY port={sock.getsockname()[1]} pid={os.getpid()}", flush=True)
    await uv.serve(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP")
    args = parser.parse_args()
    if args.http is None:
        server.run()
    else:
        anyio.run(serve_http, args.http)


if __name__ == "__main__":
    main()
