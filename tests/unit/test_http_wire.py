"""HTTP/1.1 response framing (sessions/http_wire.py), bytes in, no event loop."""

from __future__ import annotations

import pytest

from sessions.http_wire import MAX_HEAD, ResponseReader, WireError, request_head

EVENTS = [b'data: {"choices": [{"delta": {"content": "w%d"}}]}\n\n' % n for n in range(5)]
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n")


def chunked(pieces: list[bytes], ext: bool = False, trailer: bool = False) -> bytes:
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(p), b";name=v" if ext else b"", p) for p in pieces)
    return out + b"0\r\n" + (b"X-Trailer: 1\r\n" if trailer else b"") + b"\r\n"


def read(data: list[bytes], head_only: bool = False) -> tuple[ResponseReader, bytes]:
    r = ResponseReader(head_only)
    return r, b"".join(r.feed(d) for d in data)


WHOLE = HEAD + chunked(EVENTS, ext=True, trailer=True)


@pytest.mark.parametrize("cut", range(1, len(WHOLE)))
def test_chunked_split_at_every_byte_boundary(cut: int) -> None:
    r, body = read([WHOLE[:cut], WHOLE[cut:]])
    assert body == b"".join(EVENTS)
    assert r.complete and r.keep_alive and r.status == 200


def test_chunked_fed_byte_by_byte_and_all_at_once() -> None:
    r, body = read([WHOLE[i:i + 1] for i in range(len(WHOLE))])
    assert body == b"".join(EVENTS) and r.complete
    r, body = read([WHOLE])
    assert body == b"".join(EVENTS) and r.complete
    assert dict(r.headers)[b"Content-Type"] == b"text/event-stream"


def test_one_read_of_many_chunks_gives_their_bytes_joined_once() -> None:
    r = ResponseReader()
    assert r.feed(HEAD) == b""
    assert r.feed(chunked(EVENTS[:3])[:-5]) == b"".join(EVENTS[:3])  # 0-chunk not yet there
    assert not r.complete


def test_content_length_close_delimited_head_and_no_body() -> None:
    r, body = read([b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nab", b"cde"])
    assert (r.status, r.reason, body, r.complete, r.keep_alive) == (400, b"Bad Request",
                                                                    b"abcde", True, True)
    r, body = read([b"HTTP/1.1 200 OK\r\n\r\nsome", b" more"])
    assert body == b"some more" and not r.complete and not r.keep_alive
    r.feed_eof()
    assert r.complete
    r, body = read([b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"], head_only=True)
    assert r.complete and body == b""
    r, body = read([b"HTTP/1.1 204 No Content\r\n\r\n"])
    assert r.complete and r.status == 204


def test_interim_heads_are_skipped_and_connection_close_is_kept() -> None:
    r, body = read([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
                    b"Connection: close\r\nContent-Length: 2\r\n\r\nok"])
    assert (r.status, body, r.complete, r.keep_alive) == (200, b"ok", True, False)


def test_bytes_after_the_end_make_the_connection_not_reusable() -> None:
    r, body = read([HEAD + chunked(EVENTS[:1]) + b"HTTP/1.1 200"])
    assert body == EVENTS[0] and r.complete and not r.keep_alive


@pytest.mark.parametrize("data", [
    b"HTTP/2 200 OK\r\n\r\n",
    b"ICY 200 OK\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    HEAD + b"zz\r\n",
    HEAD + b"-1\r\n",
    HEAD + b"1_0\r\n",
    HEAD + b"0x10\r\n",
    HEAD + b"3\r\nabcXY",
], ids=lambda d: repr(d[-24:]))
def test_broken_framing_is_a_wire_error(data: bytes) -> None:
    with pytest.raises(WireError):
        ResponseReader().feed(data)


def test_oversized_head_and_chunk_line_are_refused() -> None:
    with pytest.raises(WireError, match="too large"):
        ResponseReader().feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD)
    with pytest.raises(WireError, match="too long"):
        ResponseReader().feed(HEAD + b"1" * 5000)


def test_eof_before_the_end_is_a_wire_error() -> None:
    r = ResponseReader()
    r.feed(HEAD + chunked(EVENTS[:2])[:-5])
    with pytest.raises(WireError, match="closed"):
        r.feed_eof()
    with pytest.raises(WireError):
        ResponseReader().feed_eof()


def test_request_head() -> None:
    assert request_head("POST", b"/v1/chat/completions?a=1",
                        [(b"Host", b"x"), (b"Content-Length", b"2")]) == (
        b"POST /v1/chat/completions?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")
