"""The Python client's own copy of the code table (clients/python/agentia_client/codes.py)
equals the server's (agentia/codes.py): same close codes, names and reconnect flags, same
error codes and retryable set, same protocol name."""

from __future__ import annotations

import agentia
import agentia_client
from agentia import codes as server
from agentia_client import codes as client
from agentia_client.policy import CLOSE_CODES, close_action


def test_close_codes_match_the_server() -> None:
    assert {c.name: c.value for c in client.CloseCode} == {
        c.name: c.value for c in server.CloseCode}
    for code in server.CloseCode:
        assert client.CloseCode(code.value).reconnect is code.reconnect, code


def test_error_codes_and_retryable_match_the_server() -> None:
    assert {c.name: c.value for c in client.ErrorCode} == {
        c.name: c.value for c in server.ErrorCode}
    assert {c.value for c in client.RETRYABLE} == {c.value for c in server.RETRYABLE}


def test_protocol_name_matches_and_the_version_is_the_distribution_s() -> None:
    assert client.PROTOCOL == agentia.PROTOCOL
    assert agentia_client.__version__ == client.__version__


def test_what_the_client_does_after_each_close_follows_the_table() -> None:
    for code in server.CloseCode:
        name, action = CLOSE_CODES[code.value]
        assert name == code.name and close_action(code.value) == action
        # the client reconnects where the table says so, and also after 1000 and 1009
        # (resuming is safe after both, docs/protocol.md section 8)
        also = code in (server.CloseCode.NORMAL, server.CloseCode.MESSAGE_TOO_BIG)
        assert (action == "reconnect") is (code.reconnect or also), code


def test_the_client_imports_nothing_of_the_server() -> None:
    import ast
    from pathlib import Path

    ours = {"agentia", "gateway", "sessions", "voice", "control", "launch", "loadtest", "tests"}
    for path in Path(client.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            assert not {n.split(".")[0] for n in names} & ours, (path.name, names)
