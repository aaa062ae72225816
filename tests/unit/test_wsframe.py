"""The load tools' WebSocket framing (loadtest/wsframe.py), bytes in and out, no socket."""

from __future__ import annotations

import pytest

from loadtest import wsframe as F


def server_frame(b0: int, payload: bytes) -> bytes:
    """What a server writes: unmasked (the parser's usual input)."""
    return F.frame(b0 & 0x0F, payload, fin=bool(b0 & 0x80), mask=False)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 70_000])
def test_a_masked_client_frame_parses_back_at_every_length_encoding(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    data = F.frame(F.TEXT, payload)
    assert data[1] & 0x80  # masked, as a client must
    got = F.parse(b"junk" + data, 4, masked_ok=True)
    assert got == (0x80 | F.TEXT, payload, 4 + len(data))
    with pytest.raises(F.FrameError) as refused:
        F.parse(data)
    assert refused.value.code == 1002


def test_an_incomplete_frame_waits_and_a_big_one_is_refused() -> None:
    data = server_frame(0x80 | F.BINARY, b"x" * 300)
    for cut in (0, 1, 2, 3, len(data) - 1):
        assert F.parse(data[:cut]) is None
    assert F.parse(data, limit=300) == (0x80 | F.BINARY, b"x" * 300, len(data))
    with pytest.raises(F.FrameError) as big:
        F.parse(data, limit=299)
    assert big.value.code == 1009


def test_rsv_bits_and_a_declared_length_are_written_as_told() -> None:
    data = F.frame(F.PING, b"abc", rsv=5, mask=False, length=200)
    assert data[0] == 0x80 | 5 << 4 | F.PING
    assert data[1:4] == bytes([126]) + (200).to_bytes(2, "big") and data[4:] == b"abc"


def test_fragments_are_joined_and_control_frames_pass_between() -> None:
    m = F.Messages()
    assert m.add(F.TEXT, b"he") is None
    assert m.add(0x80 | F.PING, b"p") == (F.PING, b"p")
    assert m.add(F.CONT, b"ll") is None
    assert m.add(0x80 | F.CONT, b"o") == (F.TEXT, b"hello")
    assert m.add(0x80 | F.BINARY, b"b") == (F.BINARY, b"b")
    with pytest.raises(F.FrameError):
        m.add(0x80 | F.CONT, b"stray")


def test_close_codes_and_the_handshake_pieces() -> None:
    assert F.close_code(F.close_payload(4003, b"why")) == 4003
    assert F.close_code(b"") == 1005
    # RFC 6455 section 1.3's example
    assert F.accept(b"dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    request = F.upgrade_request("/v1/ws", b"k==", ["Host: h:1", "Upgrade: websocket"])
    assert request == (b"GET /v1/ws HTTP/1.1\r\nHost: h:1\r\nUpgrade: websocket\r\n"
                       b"Sec-WebSocket-Key: k==\r\n\r\n")
    status, headers = F.response_head(b"HTTP/1.1 101 Switching\r\nSec-WebSocket-Accept: x ")
    assert (status, headers) == (101, {"sec-websocket-accept": "x"})
    assert F.response_head(b"garbage")[0] is None
